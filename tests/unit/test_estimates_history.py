"""Throughput of earlier jobs from a real SQLite store (estimates/history.py)."""

from __future__ import annotations

import json

import pytest

from tunewire_server.estimates import history
from tunewire_server.jobs.states import JobState
from tunewire_server.store import SQLiteStore


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "db.sqlite")
    yield s
    s.close()


def _plan(model="tiny-llama", task="sft", lora=None, batch=8, max_length=128) -> dict:
    return {"base_model": model, "task": task, "lora": lora, task: {"max_length": max_length},
            "hyperparameters": {"per_device_train_batch_size": batch, "gradient_accumulation_steps": 1}}


def _job(store, job_id, model="tiny-llama", task="sft", logs=((10.0, 100), (20.0, 1100)), state=JobState.SUCCEEDED,
         started=5.0, ended=22.0, lora=None, batch=8, max_length=128):
    store.create_job(job_id, "{}", None, ("state_change", {"state": "QUEUED"}),
                     json.dumps(_plan(model, task, lora, batch, max_length)))
    store.append_event(job_id, "state_change", {"state": "RUNNING"},
                       {"state": JobState.RUNNING, "attempts": 1, "started_at": started})
    store.append_events(job_id, [("train_log", {"step": i, "num_tokens": n}, None, t) for i, (t, n) in enumerate(logs)])
    store.append_event(job_id, "state_change", {"state": state.value}, {"state": state, "ended_at": ended})


def test_no_history_without_a_succeeded_job_of_the_same_shape(store):
    assert history.measured(store, _plan()) is None
    _job(store, "a", model="other")
    _job(store, "b", state=JobState.FAILED)
    _job(store, "c", task="classification")
    _job(store, "d", logs=((10.0, 100),))  # one log: no rate
    _job(store, "e", lora={"r": 8})  # LoRA trains faster than full training: no measure of it
    _job(store, "f", batch=4)  # a smaller batch computes fewer tokens per second
    _job(store, "g", max_length=512)  # a longer row costs more per token
    assert history.measured(store, _plan()) is None
    assert history.measured(store, _plan(lora={"r": 8})).jobs == 1
    assert history.measured(store, _plan(batch=4)).jobs == 1
    assert history.measured(store, _plan(max_length=512)).jobs == 1


def test_tokens_per_second_and_setup_of_earlier_jobs(store):
    _job(store, "a")  # 1000 tokens in 10 s, 17 s in all, 1 s for the first logged tokens: 6 s of setup
    _job(store, "b", logs=((10.0, 0), (12.0, 1000)), started=0.0, ended=13.0)
    _job(store, "c", logs=((10.0, 0), (15.0, 1000)), started=0.0, ended=16.0)
    got = history.measured(store, _plan())
    assert got.jobs == 3 and got.tokens_per_second == pytest.approx(200.0)  # the median of 100, 500, 200
    assert got.setup_seconds == pytest.approx(11.0)  # the median of 6, 11 and 11
