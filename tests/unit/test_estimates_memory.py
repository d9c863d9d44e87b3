"""The peak-memory formula (estimates/memory.py): its parts grow as they should with batch and length,
LoRA needs less than full training, checkpointing less than none, and the suggestions fit."""

from __future__ import annotations

from dataclasses import replace

from tunewire_server.estimates import memory
from tunewire_server.estimates.protocol import ModelFacts

LLAMA = ModelFacts(model_type="llama", hidden=512, layers=8, heads=8, intermediate=1376, vocab=32000,
                   total_parameters=60_000_000, trainable_parameters=60_000_000, gated_mlp=True)
SHAPE = memory.Shape(batch=8, length=256)


def test_the_total_grows_with_batch_and_length():
    totals = [memory.estimate(LLAMA, replace(SHAPE, batch=b)).total for b in (1, 2, 4, 8, 16)]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)
    totals = [memory.estimate(LLAMA, replace(SHAPE, length=n)).total for n in (16, 64, 256, 1024)]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)


def test_weights_gradients_and_adamw_states_follow_the_parameters_and_dtype():
    full = memory.estimate(LLAMA, SHAPE)
    assert (full.weights, full.gradients, full.optimizer) == (4 * 60_000_000, 4 * 60_000_000, 8 * 60_000_000)
    half = memory.estimate(LLAMA, replace(SHAPE, weight_bytes=2))
    assert half.weights == full.weights // 2 and half.optimizer == full.optimizer // 2


def test_lora_needs_less_than_full_training_and_trains_its_adapter_in_float32():
    lora = replace(LLAMA, trainable_parameters=400_000, total_parameters=60_400_000)
    full, adapted = memory.estimate(LLAMA, SHAPE), memory.estimate(lora, SHAPE)
    assert adapted.total < full.total
    assert adapted.gradients == 4 * 400_000 and adapted.optimizer == 8 * 400_000
    bf16 = memory.estimate(lora, replace(SHAPE, weight_bytes=2))
    assert bf16.gradients == 4 * 400_000  # adapters stay float32 under bfloat16 weights


def test_checkpointing_and_mixed_precision_keep_fewer_activation_bytes():
    plain = memory.activation_bytes(LLAMA, SHAPE)
    assert memory.activation_bytes(LLAMA, replace(SHAPE, checkpointing=True)) < plain
    assert memory.activation_bytes(LLAMA, replace(SHAPE, activation_bytes=2)) < plain


def test_a_classifier_has_no_vocabulary_logits():
    bert = replace(LLAMA, gated_mlp=False, num_labels=3)
    lm = memory.activation_bytes(bert, SHAPE)
    cls = memory.activation_bytes(bert, replace(SHAPE, causal_lm=False))
    assert cls < lm and lm - cls == 8 * 256 * 32000 * (4 + 4 * (memory.LOGIT_COPIES - 1))


def test_largest_finds_the_boundary_of_a_monotone_predicate():
    assert memory.largest(lambda n: n <= 37, 1, 100) == 37
    assert memory.largest(lambda n: n <= 0, 1, 100) == 0
    assert memory.largest(lambda n: True, 1, 5) == 5
    assert memory.largest(lambda n: True, 1, 0) == 0


def test_the_suggested_batch_and_length_fit_and_one_more_does_not():
    shape = replace(SHAPE, batch=64, length=1024)
    available = memory.estimate(LLAMA, replace(shape, batch=5)).total + 1
    batch, length = memory.suggestions(LLAMA, shape, available)
    assert batch == 5
    assert memory.estimate(LLAMA, replace(shape, length=length)).total <= available
    assert memory.estimate(LLAMA, replace(shape, length=length + 1)).total > available
    assert memory.suggestions(LLAMA, shape, 1) == (0, 0)  # nothing fits in one byte


def test_job_shape_picks_activation_bytes_and_the_task():
    cls = replace(LLAMA, num_labels=2)
    assert memory.job_shape(cls, 4, 0, 4, False, False, "cpu") == memory.Shape(4, 1, 4, 4, False, "cpu", False)
    assert memory.job_shape(LLAMA, 4, 9, 4, True, True, "cuda").activation_bytes == 2
    assert memory.job_shape(LLAMA, 4, 9, 2, False, False, "cuda").activation_bytes == 2
