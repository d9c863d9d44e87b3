"""Assembling the answer from the worker's facts (estimates/service.py): steps, fit, suggestions that fit,
and which time basis wins."""

from __future__ import annotations

from dataclasses import replace

from tunewire_server.estimates import history, memory, service
from tunewire_server.estimates import protocol as p

PLAN = {"hyperparameters": {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
                            "num_train_epochs": 2.0, "max_steps": -1, "eval_strategy": "no", "eval_steps": None,
                            "eval_on_start": False}}
REPLY = p.EstimateReply(
    model=p.ModelFacts("llama", 256, 4, 4, 688, 32000, 20_000_000, 20_000_000, gated_mlp=True),
    data=p.DataFacts(100, 0, 5000, 0, 64, 50, 60, 64, 100, 58.0, peak_length=64),
    device=p.DeviceFacts("cpu", "cpu", 16 * 2**30), precision_bytes=4, mixed_precision=False,
    gradient_checkpointing=False, probe=p.ProbeFacts(4, 2.0, 2000, load_seconds=1.0, batch=8), prepare_seconds=0.5)


def test_a_job_that_fits_is_timed_by_its_probe():
    est = service.assemble(REPLY, PLAN, None)
    assert (est.steps_per_epoch, est.total_steps) == (13, 26)
    assert est.fits and (est.suggested_batch_size, est.suggested_max_length) == (0, 0)
    # 26 steps x 8 rows x 58 tokens at 1000 tokens/s, the loop's cost per batch, the data, the model's load
    # and the fixed setup
    expected = 26 * 8 * 58 / 1000 + 26 * service.BATCH_OVERHEAD_S + 0.5 + 1.0 + service.PROBE_SETUP_S
    assert abs(est.estimated_seconds - expected) < 1e-6
    assert est.time_basis.startswith("probe: 4 steps")


def test_history_wins_over_the_probe():
    est = service.assemble(REPLY, PLAN, history.Throughput(tokens_per_second=500.0, setup_seconds=2.0, jobs=3))
    assert abs(est.estimated_seconds - (26 * 8 * 58 / 500 + 2.0)) < 1e-6
    assert est.time_basis.startswith("measured: 3 earlier jobs")


def test_a_job_that_does_not_fit_gets_suggestions_that_do():
    shape = memory.job_shape(REPLY.model, 8, 64, 4, False, False, "cpu")
    small = memory.estimate(REPLY.model, replace(shape, batch=3)).total
    reply = replace(REPLY, device=p.DeviceFacts("cpu", "cpu", small), probe=None)
    est = service.assemble(reply, PLAN, None)
    assert not est.fits and est.suggested_batch_size == 3 and 0 < est.suggested_max_length < 64
    assert est.estimated_seconds == 0 and est.time_basis.startswith("none")
    assert any("more than" in note for note in est.notes)


def test_the_first_steps_extra_cost_is_counted_once():
    """The warm-up step is one of the job's steps: only what it cost beyond a timed step is setup."""
    reply = replace(REPLY, probe=replace(REPLY.probe, warmup_seconds=1.5))  # a timed step took 0.5 s
    plain = service.assemble(REPLY, PLAN, None).estimated_seconds
    assert abs(service.assemble(reply, PLAN, None).estimated_seconds - (plain + 1.0)) < 1e-6


def test_an_sft_probe_counts_tokens_as_trl_does():
    """The SFT probe runs the job's SFTTrainer: its tokens leave padding out, its build is the job's data
    phase, model load and trainer creation (the counting phase is not part of a job's setup)."""
    data = replace(REPLY.data, mean_unpadded_length=40.0)
    probe = p.ProbeFacts(4, 2.0, 2000, build_seconds=3.0, batch=8, unpadded=True)
    est = service.assemble(replace(REPLY, data=data, probe=probe), PLAN, None)
    assert abs(est.estimated_seconds - (26 * 8 * 40 / 1000 + 3.0 + service.PROBE_SETUP_S)) < 1e-6


def test_history_counts_tokens_as_trl_does():
    data = replace(REPLY.data, mean_unpadded_length=40.0)
    est = service.assemble(replace(REPLY, data=data), PLAN, history.Throughput(500.0, 2.0, 1))
    assert abs(est.estimated_seconds - (26 * 8 * 40 / 500 + 2.0)) < 1e-6
