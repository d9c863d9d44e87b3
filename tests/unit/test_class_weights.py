"""Class weights: the spec's checks (INVALID_ARGUMENT naming the field) and the weights and loss the worker uses."""

import pytest
import torch
import torch.nn.functional as F

from tests.support.validation import settings_with_data
from tunewire.spec import spec_from_dict
from tunewire.v1 import job_pb2
from tunewire_server.errors import InvalidSpec
from tunewire_server.validation import validate
from tunewire_server.validation.common import MAX_LABELS
from tunewire_server.worker.training.class_weights import effective_weights, weighted_loss

ROWS = [{"text": f"text {i}", "label": "pos" if i % 4 else "neg"} for i in range(12)]  # 3 neg, 9 pos


@pytest.fixture
def settings(tmp_path):
    return settings_with_data(tmp_path / "data", ROWS)


def spec(class_weights, **classification):
    return spec_from_dict({"base_model": "tiny", "train_dataset": {"file": {"path": "train.jsonl"}},
                           "classification": {**classification, "class_weights": class_weights}})


def refused(settings, s) -> dict[str, str]:
    with pytest.raises(InvalidSpec) as info:
        validate(s, settings)
    return {v.field: v.description for v in info.value.violations}


@pytest.mark.parametrize("weights, declared, field, needle", [
    ({"per_label": {"maybe": 2.0}}, [], 'classification.class_weights.per_label["maybe"]', "not one of the labels"),
    ({"per_label": {"maybe": 2.0}}, ["neg", "pos"], 'classification.class_weights.per_label["maybe"]',
     "not one of the labels"),
    ({"per_label": {"neg": 0.0}}, [], 'classification.class_weights.per_label["neg"]', "above 0"),
    ({"per_label": {"neg": -1.5}}, [], 'classification.class_weights.per_label["neg"]', "above 0"),
    ({"per_label": {"neg": "Infinity"}}, [], 'classification.class_weights.per_label["neg"]', "finite"),
    ({"per_label": {"neg": "NaN"}}, [], 'classification.class_weights.per_label["neg"]', "finite"),
    ({"balanced": True, "per_label": {"neg": 2.0}}, [], "classification.class_weights", "not both"),
    ({"per_label": {"bad\nname": 2.0}}, [], 'classification.class_weights.per_label["bad\\nname"]', "control"),
])
def test_bad_class_weights_name_the_field(settings, weights, declared, field, needle):
    fields = refused(settings, spec(weights, label_names=declared))
    assert needle in fields[field]


def test_too_many_per_label_entries_are_refused_before_looking_at_them(settings):
    fields = refused(settings, spec({"per_label": {f"l{i}": 1.0 for i in range(MAX_LABELS + 1)}}))
    assert "at most" in fields["classification.class_weights.per_label"]


def test_good_class_weights_validate(settings):
    validate(spec({"balanced": True}), settings)
    validate(spec({"per_label": {"neg": 3.0}}), settings)
    validate(spec({"per_label": {"neg": 3.0, "pos": 0.5}}, label_names=["neg", "pos"]), settings)


def test_balanced_weights_follow_the_training_counts():
    weights = effective_weights(job_pb2.ClassWeights(balanced=True), ["a", "b", "c"], [0] * 6 + [1] * 3 + [2])
    assert weights == pytest.approx([10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1)])


def test_a_class_missing_from_training_weighs_one_under_balanced():
    weights = effective_weights(job_pb2.ClassWeights(balanced=True), ["a", "b", "c"], [0, 0, 0, 2])
    assert weights == pytest.approx([4 / (2 * 3), 1.0, 4 / (2 * 1)])


def test_per_label_weights_default_to_one():
    weights = effective_weights(job_pb2.ClassWeights(per_label={"c": 4.0}), ["a", "b", "c"], [0, 1, 2])
    assert weights == [1.0, 1.0, 4.0]
    assert effective_weights(job_pb2.ClassWeights(), ["a", "b"], [0, 1]) is None


def test_the_weighted_loss_is_the_weighted_sum_over_the_accumulated_batch():
    torch.manual_seed(0)
    logits = torch.randn(5, 3)
    labels = torch.tensor([0, 1, 2, 2, -100])  # -100: ignored, as in transformers
    loss = weighted_loss([1.0, 2.0, 0.5])
    per_row = F.cross_entropy(logits[:4], labels[:4], reduction="none")
    expected = (per_row * torch.tensor([1.0, 2.0, 0.5, 0.5])).sum()
    # num_items_in_batch from Trainer: every labelled row of the accumulated batch (here, 8 over two micro-batches)
    assert loss({"logits": logits}, labels, num_items_in_batch=8) == pytest.approx(float(expected / 8))
    # evaluation passes none: this batch's labelled rows
    assert loss({"logits": logits}, labels) == pytest.approx(float(expected / 4))


def test_equal_weights_give_the_plain_cross_entropy():
    logits = torch.randn(4, 2)
    labels = torch.tensor([0, 1, 1, 0])
    assert weighted_loss([1.0, 1.0])({"logits": logits}, labels) == pytest.approx(
        float(F.cross_entropy(logits, labels)))
