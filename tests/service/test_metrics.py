"""Prometheus metrics move with what the server does."""

from __future__ import annotations

import re
import urllib.request

import pytest

import tunewire
from tests import tiny
from tunewire import JobState, TrainLog


def scrape(server) -> str:
    port = server.server.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def value(text: str, name: str, labels: str = "") -> float:
    """The sample's value; a sample that is not exported fails the test (a missing metric is not 0)."""
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    match = re.search(pattern, text, re.M)
    assert match, f"no sample {name}{{{labels}}} in the scrape"
    return float(match.group(1))


def test_value_refuses_a_missing_sample():
    text = 'tunewire_jobs{state="SUCCEEDED"} 2.0\ntunewire_queue_length 0.0\n'
    assert value(text, "tunewire_jobs", 'state="SUCCEEDED"') == 2
    assert value(text, "tunewire_queue_length") == 0
    for name, labels in (("tunewire_queue_length", 'state="x"'), ("tunewire_jobs", 'state="FAILED"'),
                         ("tunewire_gone", "")):
        with pytest.raises(AssertionError):
            value(text, name, labels)


def test_metrics_move(server, client):
    tiny.write_jsonl(server.settings.dataset_root / "train.jsonl", tiny.sentiment_rows(16))
    before = scrape(server)
    assert value(before, "tunewire_jobs", 'state="SUCCEEDED"') == 0
    spec = {"base_model": "tiny-bert", "classification": {}, "train_dataset": {"file": {"path": "train.jsonl"}},
            "hyperparameters": {"max_steps": 30, "logging_steps": 5, "save_strategy": "no",
                                "per_device_train_batch_size": 4}}
    running = client.submit(spec)
    queued = client.submit(spec)
    during = scrape(server)
    assert value(during, "tunewire_queue_length") >= 1
    assert value(during, "tunewire_jobs_submitted_total", 'outcome="accepted"') == 2
    with tunewire.Client(server.address) as other:
        stream = other.stream_metrics(running.id)
        next(e for e in stream if isinstance(e.data, TrainLog) and e.data.step >= 10)
        live = scrape(server)
        assert value(live, "tunewire_open_streams") >= 1
        assert value(live, "tunewire_training_steps_per_second") > 0
        stream.close()
    with pytest.raises(tunewire.InvalidArgumentError):
        client.submit({**spec, "base_model": ""})
    client.wait(running.id)
    client.wait(queued.id)
    client.predict(running.id, ["great"])
    after = scrape(server)
    assert value(after, "tunewire_jobs", 'state="SUCCEEDED"') == 2
    assert value(after, "tunewire_queue_length") == 0
    assert value(after, "tunewire_jobs_submitted_total", 'outcome="refused"') == 1
    assert value(after, "tunewire_job_duration_seconds_count", 'state="SUCCEEDED"') == 2
    assert value(after, "tunewire_events_streamed_total") > value(before, "tunewire_events_streamed_total")
    assert value(after, "tunewire_predict_latency_seconds_count", 'rpc="Predict"') == 1
    assert client.get(running.id).state == JobState.SUCCEEDED
