"""Issue 12, items 7 and 8 (worker side), on a real server: a job that fails in the worker for a reason of
its own data is FAILED after one attempt with kind USER, whatever its max_retries, and its error message
quotes none of the data."""

from __future__ import annotations

import json

import pytest

from tests import tiny
from tunewire import JobState, TrainLog

pytestmark = pytest.mark.slow

SECRET = "Ophelia-7731 private diagnosis text"


def test_a_data_failure_in_the_worker_is_not_retried_and_not_quoted(server, client):
    datasets_dir = server.settings.data_dir / "datasets"
    tiny.write_jsonl(datasets_dir / "train.jsonl", tiny.sentiment_rows(32))
    tiny.write_jsonl(datasets_dir / "later.jsonl", tiny.sentiment_rows(32))
    hp = {"max_steps": 100000, "per_device_train_batch_size": 4, "logging_steps": 1, "save_strategy": "no"}
    blocker = client.submit({"base_model": "tiny-bert", "classification": {},
                             "train_dataset": {"file": {"path": "train.jsonl"}}, "hyperparameters": hp})
    job = client.submit({"base_model": "tiny-bert", "classification": {}, "max_retries": 3,
                         "train_dataset": {"file": {"path": "later.jsonl"}},
                         "hyperparameters": {**hp, "max_steps": 2}})
    next(e for e in client.stream_metrics(blocker.id) if isinstance(e.data, TrainLog))
    # accepted and queued: the file changes before the job runs; a label is now a line of someone's text
    rows = tiny.sentiment_rows(8)
    rows[5]["label"] = SECRET
    (datasets_dir / "later.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    client.cancel(blocker.id)
    failed = client.wait(job.id, raise_on_failure=False)
    assert failed.state == JobState.FAILED
    assert (failed.error.kind, failed.error.code) == ("USER", "INVALID_DATA")
    assert failed.attempts == 1
    assert "Ophelia" not in failed.error.message and len(failed.error.message) <= 300
    assert "row 6" in failed.error.message
