"""One real Trainer run on a tiny local BERT, observed by several clients at once, then Predict."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import tunewire
from tests import tiny
from tests.support.server_thread import ServerThread, make_settings
from tunewire import CheckpointSaved, EvalResult, JobState, StateChange, TrainLog

SPEC = {
    "display_name": "tiny sentiment",
    "base_model": "tiny-bert",
    "classification": {"max_length": 32},
    "train_dataset": {"file": {"path": "train.jsonl"}},
    "eval_dataset": {"file": {"path": "eval.jsonl"}, "max_samples": 48},
    "hyperparameters": {
        "num_train_epochs": 5, "learning_rate": 0.005, "per_device_train_batch_size": 8,
        "lr_scheduler_type": "constant", "logging_steps": 2, "eval_on_start": True, "save_total_limit": 1,
    },
}


@pytest.fixture(scope="module")
def run(tmp_path_factory, models_root):
    """Start a job; two streamers follow it from the start, a third drops out and reconnects."""
    data_dir = tmp_path_factory.mktemp("e2e")
    server = ServerThread(make_settings(data_dir, models_root)).start()
    root = server.settings.dataset_root
    tiny.write_jsonl(root / "train.jsonl", tiny.sentiment_rows(64))
    tiny.write_jsonl(root / "eval.jsonl", tiny.sentiment_rows(64, seed=1))
    client = tunewire.Client(server.address, timeout=60)
    job = client.submit(SPEC)
    streams: dict[str, list] = {"a": [], "b": [], "reconnected": []}

    def follow(name):
        with tunewire.Client(server.address) as c:
            streams[name] = list(c.stream_metrics(job.id))

    def drop_and_reconnect():
        with tunewire.Client(server.address) as c:
            part = []
            for event in c.stream_metrics(job.id):
                part.append(event)
                if isinstance(event.data, TrainLog):
                    break  # disconnect while the job is live
            streams["reconnected"] = part + list(c.stream_metrics(job.id, after_seq=part[-1].seq))

    threads = [threading.Thread(target=follow, args=(n,)) for n in ("a", "b")]
    threads.append(threading.Thread(target=drop_and_reconnect))
    for t in threads:
        t.start()
    final = client.wait(job.id, raise_on_failure=False)
    for t in threads:
        t.join(60)
    yield server, client, final, streams
    client.close()
    server.stop()


def test_job_succeeds_and_learns(run):
    _, _, job, streams = run
    assert job.state == JobState.SUCCEEDED, job.error
    evals = [e.data for e in streams["a"] if isinstance(e.data, EvalResult)]
    assert evals[0].step == 0 and len(evals) == 6  # eval_on_start + one per epoch
    assert {"accuracy", "f1", "loss"} <= set(evals[-1].metrics)
    assert evals[-1].metrics["accuracy"] > evals[0].metrics["accuracy"]
    assert evals[-1].metrics["accuracy"] >= 0.9
    assert job.metrics["accuracy"] == evals[-1].metrics["accuracy"] and job.progress == 1.0


def test_events_carry_what_the_issue_asks_for(run):
    _, _, job, streams = run
    events = streams["a"]
    assert [e.seq for e in events] == list(range(1, job.last_seq + 1))
    states = [e.data.state for e in events if isinstance(e.data, StateChange)]
    assert states == [JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]
    logs = [e.data for e in events if isinstance(e.data, TrainLog) and e.data.loss is not None]
    assert logs and all(x.learning_rate and x.grad_norm is not None and 0 < x.progress <= 1 for x in logs)
    assert logs[0].eta_seconds is not None and logs[0].max_steps == 40
    assert [x.step for x in logs] == sorted(x.step for x in logs)
    assert any(isinstance(e.data, CheckpointSaved) for e in events)
    assert all(e.time is not None for e in events)


def test_concurrent_streams_see_the_same_events_and_reconnect_loses_nothing(run):
    _, _, _, streams = run
    key = [(e.seq, e.kind, repr(e.data)) for e in streams["a"]]
    assert key == [(e.seq, e.kind, repr(e.data)) for e in streams["b"]]
    assert key == [(e.seq, e.kind, repr(e.data)) for e in streams["reconnected"]]


def test_replay_after_the_end(run):
    _, client, job, streams = run
    assert [e.seq for e in client.stream_metrics(job.id, after_seq=5)] == list(range(6, job.last_seq + 1))


def test_artifacts_are_complete(run):
    server, _, job, _ = run
    job_dir = Path(server.settings.jobs_dir) / job.id
    model = job_dir / "model"
    meta = json.loads((model / "tunewire.json").read_text())
    assert meta["label_names"] == ["negative", "positive"]
    assert (model / "config.json").is_file() and (model / "tokenizer.json").is_file()
    assert not (job_dir / "model.partial").exists()


def test_predict_labels_with_scores(run):
    _, client, job, _ = run
    texts = ["great relief works happy", "awful pain terrible nausea", "the pill was good and helpful"]
    predictions = client.predict(job.id, texts)
    assert [p.label for p in predictions] == ["positive", "negative", "positive"]
    for p in predictions:
        assert set(p.scores) == {"negative", "positive"}
        assert abs(sum(p.scores.values()) - 1) < 1e-4 and p.score == max(p.scores.values())
    with pytest.raises(tunewire.InvalidArgumentError):
        client.predict(job.id, [])


def test_async_client(run):
    server, _, job, _ = run

    async def go():
        async with tunewire.AsyncClient(server.address) as c:
            assert await c.health()
            got = await c.get(job.id)
            events = [e async for e in c.stream_metrics(job.id, after_seq=job.last_seq - 1)]
            jobs = [j async for j in c.list_jobs()]
            predictions = await c.predict(job.id, ["great relief works"])
            with pytest.raises(tunewire.NotFoundError):
                await c.get("job-missing")
            return got, events, jobs, predictions

    got, events, jobs, predictions = asyncio.run(go())
    assert got.state == JobState.SUCCEEDED
    assert [e.seq for e in events] == [job.last_seq]
    assert job.id in [j.id for j in jobs]
    assert predictions[0].label == "positive"


def _cli(server, *args):
    env = {**os.environ, "TUNEWIRE_ADDRESS": server.address, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "tunewire.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_cli(run, tmp_path):
    server, _, job, _ = run
    listed = _cli(server, "jobs")
    assert listed.returncode == 0 and job.id in listed.stdout
    got = _cli(server, "get", job.id, "--json")
    assert json.loads(got.stdout)["state"] == "SUCCEEDED"
    predicted = _cli(server, "predict", job.id, "great relief works happy", "--json")
    assert json.loads(predicted.stdout)[0]["label"] == "positive"
    watched = _cli(server, "watch", job.id)
    assert watched.returncode == 0 and "SUCCEEDED" in watched.stdout and "accuracy=" in watched.stdout
    assert any(block in watched.stdout for block in "▁▂▃▄▅▆▇█")  # the loss sparkline beside the bar
    chart = tmp_path / "chart.png"
    plotted = _cli(server, "plot", job.id, "-o", str(chart))
    assert plotted.returncode == 0, plotted.stderr
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000
    bad = tmp_path / "bad.yaml"
    bad.write_text("base_model: tiny-bert\nclassification: {}\ntrain_dataset: {file: {path: nope.jsonl}}\n")
    refused = _cli(server, "submit", str(bad))
    assert refused.returncode == 2 and "train_dataset.file.path" in refused.stderr
    missing = _cli(server, "get", "job-missing")
    assert missing.returncode == 2 and "no job" in missing.stderr


def test_cli_submit_watch(run, tmp_path):
    server, _, _, _ = run
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "base_model: tiny-bert\nclassification: {}\ntrain_dataset: {file: {path: train.jsonl}}\n"
        "hyperparameters: {max_steps: 3, save_strategy: 'no', logging_steps: 1}\n")
    result = _cli(server, "submit", str(spec), "--watch")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted job-" in result.stdout and "SUCCEEDED" in result.stdout
