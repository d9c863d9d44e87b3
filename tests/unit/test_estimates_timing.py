"""The step count (Trainer's arithmetic) and the time model (estimates/timing.py)."""

from __future__ import annotations

import pytest

from tunewire_server.estimates import timing


@pytest.mark.parametrize(("rows", "batch", "accumulation", "epochs", "max_steps", "per_epoch", "total"), [
    (18, 4, 2, 3.0, -1, 3, 9),  # 5 batches: 2 full steps and a partial one
    (16, 4, 1, 3.0, -1, 4, 12),
    (16, 4, 1, 2.5, -1, 4, 10),  # a fraction of an epoch rounds up
    (30, 8, 1, 3.0, 7, 4, 7),  # max_steps wins
    (3, 8, 4, 1.0, -1, 1, 1),  # fewer rows than a batch still make a step
])
def test_steps_follow_the_trainer(rows, batch, accumulation, epochs, max_steps, per_epoch, total):
    steps = timing.steps(rows, batch, accumulation, epochs, max_steps)
    assert (steps.per_epoch, steps.total) == (per_epoch, total)


def test_world_size_divides_the_batches():
    assert timing.steps(64, 4, 1, 1.0, -1, world=2).per_epoch == 8


def test_evaluations_per_strategy():
    assert timing.evaluations("no", 10, 4, None, False) == 0
    assert timing.evaluations("epoch", 10, 4, None, False) == 3
    assert timing.evaluations("steps", 10, 4, 3, True) == 4


def test_seconds_scale_with_the_work_and_the_rate():
    work = timing.workload(total_steps=10, batch=4, accumulation=2, mean_padded_length=50.0, sequences=100,
                           eval_rows=20, mean_eval_length=40.0, evaluations=2)
    assert work.train_tokens == 10 * 2 * 4 * 50.0 and work.eval_tokens == 2 * 20 * 40.0
    base = timing.seconds(work, 1000.0)
    assert base == pytest.approx(4.0 + 1.6 / timing.EVAL_SPEEDUP)
    assert timing.seconds(work, 2000.0) == pytest.approx(base / 2)
    assert timing.seconds(work, 1000.0, setup_seconds=5) == pytest.approx(base + 5)
    assert timing.seconds(work, 1000.0, batch_overhead_s=0.1) == pytest.approx(base + 20 * 0.1)
    assert timing.seconds(work, 0.0) == 0.0  # no rate, no estimate
