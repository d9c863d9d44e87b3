"""Reproducible runs on the CPU: the seed is set before the classification head is initialised, the data
shuffled and dropout run, so a job repeated with the seed another one ran with (drawn at submission and
recorded on the job) gives the same eval metrics and bit-identical weights; the job folder holds TensorBoard
event files. A tiny BERT without a classification head: every job initialises a fresh one."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import tunewire
from tests import tiny
from tests.support.server_thread import ServerThread, make_settings
from tunewire import EvalResult, JobState
from tunewire_server.layout import MODEL_DIR, TENSORBOARD_DIR

SPEC = {
    "base_model": "tiny-bert",
    "classification": {"max_length": 32},
    "train_dataset": {"file": {"path": "train.jsonl"}},
    "eval_dataset": {"file": {"path": "eval.jsonl"}},
    "hyperparameters": {"num_train_epochs": 2, "learning_rate": 0.005, "per_device_train_batch_size": 8,
                        "logging_steps": 2, "eval_on_start": True, "save_strategy": "no"},
}


def with_seed(seed: int | None) -> dict:
    hp = dict(SPEC["hyperparameters"])
    if seed is not None:
        hp["seed"] = seed
    return {**SPEC, "hyperparameters": hp}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, models_root):
    """Two jobs without a seed, then one with the first job's recorded seed."""
    # No warm worker: the server's stop would wait for one still importing, on a loaded machine for a minute.
    server = ServerThread(make_settings(tmp_path_factory.mktemp("repro"), models_root, warm_worker=False)).start()
    root = server.settings.dataset_root
    tiny.write_jsonl(root / "train.jsonl", tiny.sentiment_rows(32))
    tiny.write_jsonl(root / "eval.jsonl", tiny.sentiment_rows(16, seed=1))
    client = tunewire.Client(server.address, timeout=120)
    jobs = {}
    for name in ("first", "second"):
        jobs[name] = client.wait(client.submit(with_seed(None)).id, raise_on_failure=False)
    jobs["again"] = client.wait(client.submit(with_seed(jobs["first"].seed)).id, raise_on_failure=False)
    evals = {name: [e.data for e in client.stream_metrics(job.id) if isinstance(e.data, EvalResult)]
             for name, job in jobs.items()}
    yield server, jobs, evals
    client.close()
    server.stop()


def quality(event: EvalResult) -> dict:
    """An evaluation's metrics, less its timings."""
    return {k: v for k, v in event.metrics.items() if k not in ("runtime", "samples_per_second", "steps_per_second")}


def weights(server, job_id: str) -> dict:
    return load_file(str(Path(server.settings.jobs_dir) / job_id / MODEL_DIR / "model.safetensors"))


def test_jobs_without_a_seed_get_different_recorded_seeds(runs):
    _, jobs, _ = runs
    assert all(job.state == JobState.SUCCEEDED for job in jobs.values()), {n: j.error for n, j in jobs.items()}
    assert jobs["first"].seed != jobs["second"].seed
    assert jobs["again"].seed == jobs["first"].seed
    assert not jobs["first"].spec.hyperparameters.HasField("seed")  # the spec stays as submitted


def test_the_recorded_seed_repeats_the_run_exactly(runs):
    server, jobs, evals = runs
    first, again = evals["first"], evals["again"]
    assert len(first) == 3  # eval_on_start and one per epoch
    assert [(e.step, quality(e)) for e in again] == [(e.step, quality(e)) for e in first]
    a, b = weights(server, jobs["first"].id), weights(server, jobs["again"].id)
    assert a.keys() == b.keys() and "classifier.weight" in a
    different = [name for name in a if not (a[name] == b[name]).all()]
    assert different == []


def test_another_seed_initialises_another_head(runs):
    """The head is seeded: the untrained model's eval (step 0) differs with the seed, and repeats with it."""
    server, jobs, evals = runs
    assert evals["first"][0].step == 0
    assert quality(evals["first"][0]) == quality(evals["again"][0])
    assert evals["first"][0].metrics["loss"] != evals["second"][0].metrics["loss"]
    assert not (weights(server, jobs["first"].id)["classifier.weight"]
                == weights(server, jobs["second"].id)["classifier.weight"]).all()


def test_the_job_folder_holds_tensorboard_events_with_the_train_loss(runs):
    server, jobs, _ = runs
    folder = Path(server.settings.jobs_dir) / jobs["first"].id / TENSORBOARD_DIR
    [events] = list(folder.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events))
    acc.Reload()
    losses = acc.Scalars("train/loss")
    assert len(losses) >= 2 and losses[0].step == 1 and all(e.value > 0 for e in losses)
    assert "eval/accuracy" in acc.Tags()["scalars"]
