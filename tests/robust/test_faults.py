"""Issue 4's promises under faults: crashes, cancels, restarts, NaN losses. Real servers on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import tunewire
from tests import tiny
from tests.support.procs import training_workers
from tests.support.specs import tiny_classification
from tests.support.waiting import wait_for
from tunewire import CheckpointSaved, JobState, StateChange, TrainLog

pytestmark = pytest.mark.slow


def long_spec(max_steps=400, save_steps=40, **extra):
    hyperparameters = {"max_steps": max_steps, "logging_steps": 5, "save_strategy": "steps", "save_steps": save_steps,
                       "save_total_limit": 3, "lr_scheduler_type": "constant", "learning_rate": 0.001}
    return {**tiny_classification(**hyperparameters), **extra}


def short_spec():
    spec = long_spec(max_steps=2)
    spec["hyperparameters"]["save_strategy"] = "no"
    return spec


def write_data(root: Path) -> None:
    tiny.write_jsonl(root / "datasets" / "train.jsonl", tiny.sentiment_rows(32))


def first(client, job_id, kind, after=0):
    return next(e for e in client.stream_metrics(job_id, after_seq=after) if isinstance(e.data, kind))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def worker_pid(data_dir: Path, job_id: str) -> int:
    return wait_for(lambda: (data_dir / "jobs" / job_id / "worker.pid").exists()
                    and int((data_dir / "jobs" / job_id / "worker.pid").read_text()))


def states(client, job_id):
    return [e.data.state for e in client.stream_metrics(job_id) if isinstance(e.data, StateChange)]


# 1. A job accepted is never lost ---------------------------------------------------------------


def test_accepted_job_survives_kill_9_of_the_server(process_factory, tmp_path):
    data = tmp_path / "d"
    write_data(data)
    server = process_factory(data)
    with tunewire.Client(server.address) as c:
        job = c.submit(short_spec(), request_id="once")
    server.signal(signal.SIGKILL)
    server.wait()
    again = process_factory(data)
    with tunewire.Client(again.address) as c:
        assert c.get(job.id).id == job.id
        assert c.submit(short_spec(), request_id="once").id == job.id  # still idempotent
        assert c.wait(job.id).state == JobState.SUCCEEDED


# 2 + 3. Terminal states with reasons; a worker crash ends only that job --------------------------


def test_worker_kill_9_fails_only_that_job_quickly(server, client):
    write_data(server.settings.data_dir)
    doomed = client.submit(long_spec(max_steps=100000))
    after = client.submit(short_spec())
    first(client, doomed.id, TrainLog)
    pid = worker_pid(server.settings.data_dir, doomed.id)
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    failed = client.wait(doomed.id, raise_on_failure=False)
    assert time.monotonic() - t0 < 3
    assert failed.state == JobState.FAILED
    assert (failed.error.code, failed.error.kind) == ("WORKER_CRASHED", "SYSTEM")
    assert "SIGKILL" in failed.error.message
    assert client.health()
    assert client.wait(after.id).state == JobState.SUCCEEDED
    assert not alive(pid)


def test_crashed_job_with_retries_resumes_from_its_checkpoint(server, client):
    write_data(server.settings.data_dir)
    job = client.submit(long_spec(max_steps=200, save_steps=40, max_retries=1))
    saved = first(client, job.id, CheckpointSaved)
    pid = worker_pid(server.settings.data_dir, job.id)
    os.kill(pid, signal.SIGKILL)
    done = client.wait(job.id)
    assert done.attempts == 2 and done.error is None
    events = list(client.stream_metrics(job.id))
    assert [e.data.state for e in events if isinstance(e.data, StateChange)] == [
        JobState.QUEUED, JobState.RUNNING, JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]
    log = (server.settings.jobs_dir / job.id / "worker.log").read_text()
    assert "resuming from checkpoint-" in log
    resumed_at = int(log.split("resuming from checkpoint-")[1].split()[0])
    running = [i for i, e in enumerate(events) if isinstance(e.data, StateChange) and e.data.state == JobState.RUNNING]
    first_run, second_run = events[running[0]:running[1]], events[running[1]:]
    # it resumed from a checkpoint the first run saved, no older than the first one the client saw
    assert resumed_at >= saved.data.step
    assert resumed_at in [e.data.step for e in first_run if isinstance(e.data, CheckpointSaved)]
    # every step the second run trained is past that checkpoint: it did not start over
    steps = [e.data.step for e in second_run if isinstance(e.data, TrainLog)]
    assert steps and min(steps) > resumed_at, (resumed_at, steps[:5])
    assert max(steps) == 200


def test_user_errors_are_told_apart_from_system_errors(server, client):
    write_data(server.settings.data_dir)
    spec = short_spec()
    spec["train_dataset"] = {"hub": {"name": "nobody/no-such-dataset"}}
    failed = client.wait(client.submit(spec).id, raise_on_failure=False)
    assert failed.state == JobState.FAILED
    assert (failed.error.code, failed.error.kind, failed.error.field) == (
        "DATASET_UNAVAILABLE", "USER", "train_dataset.hub.name")


def test_nan_loss_fails_the_job_with_nan_loss(server, client, models_root):
    import torch
    from transformers import AutoModel

    broken = server.settings.model_root / "nan-bert"
    if not broken.exists():
        model = AutoModel.from_pretrained(models_root / "tiny-bert")
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
        model.save_pretrained(broken)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (broken / name).write_bytes((models_root / "tiny-bert" / name).read_bytes())
    write_data(server.settings.data_dir)
    spec = long_spec(max_steps=50)
    spec["base_model"] = "nan-bert"
    failed = client.wait(client.submit(spec).id, raise_on_failure=False)
    assert (failed.state, failed.error.code, failed.error.kind) == (JobState.FAILED, "NAN_LOSS", "USER")


# 4. Cancel --------------------------------------------------------------------------------------


def test_cancel_running_job_stops_it_and_its_worker(server, client):
    write_data(server.settings.data_dir)
    job = client.submit(long_spec(max_steps=100000))
    first(client, job.id, TrainLog)
    pid = worker_pid(server.settings.data_dir, job.id)
    t0 = time.monotonic()
    client.cancel(job.id)
    done = client.wait(job.id, raise_on_failure=False)
    assert done.state == JobState.CANCELLED and time.monotonic() - t0 < 5
    wait_for(lambda: not alive(pid), timeout=5)
    job_dir = server.settings.jobs_dir / job.id
    assert not (job_dir / "model").exists() and not (job_dir / "model.partial").exists()
    with pytest.raises(tunewire.FailedPreconditionError):
        client.predict(job.id, ["x"])


def start_a_job_on_a_cold_server(server_factory):
    """A server without a warm worker and a job just RUNNING: its worker is importing torch right now."""
    st = server_factory(warm_worker=False)
    write_data(st.settings.data_dir)
    with tunewire.Client(st.address) as c:
        job = c.submit(long_spec(max_steps=100000))
        wait_for(lambda: c.get(job.id).state == JobState.RUNNING)
    return st, job


def test_cancel_while_the_worker_is_still_starting(server_factory):
    st, job = start_a_job_on_a_cold_server(server_factory)
    with tunewire.Client(st.address) as c:
        starting = wait_for(lambda: training_workers(st.settings.data_dir))
        # still starting: its worker is alive but has not been handed the job (worker.pid is written then),
        # and nothing was trained
        assert not (st.settings.jobs_dir / job.id / "worker.pid").exists()
        assert c.get(job.id).last_seq == 2  # QUEUED, RUNNING
        c.cancel(job.id)
        assert c.wait(job.id, raise_on_failure=False).state == JobState.CANCELLED
        events = list(c.stream_metrics(job.id))
    assert not any(isinstance(e.data, (TrainLog, CheckpointSaved)) for e in events)
    assert [e.data.state for e in events] == [JobState.QUEUED, JobState.RUNNING, JobState.CANCELLING,
                                              JobState.CANCELLED]
    wait_for(lambda: not any(alive(pid) for pid in starting), timeout=10)  # the starting worker is gone
    assert not (st.settings.jobs_dir / job.id / "model").exists()


def test_stopping_the_server_while_a_worker_is_still_starting_ends_that_worker(server_factory):
    st, job = start_a_job_on_a_cold_server(server_factory)
    starting = wait_for(lambda: training_workers(st.settings.data_dir))
    assert not (st.settings.jobs_dir / job.id / "worker.pid").exists()
    st.stop_server()
    wait_for(lambda: not any(alive(pid) for pid in starting), timeout=5)


# 5. Restarts ------------------------------------------------------------------------------------


def test_sigterm_checkpoints_and_a_restart_resumes_with_the_same_seq_numbering(process_factory, tmp_path):
    data = tmp_path / "d"
    write_data(data)
    server = process_factory(data)
    with tunewire.Client(server.address) as c:
        job = c.submit(long_spec(max_steps=600, save_steps=1000))  # no scheduled checkpoint before SIGTERM
        first(c, job.id, TrainLog)
        server.signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert server.wait(60) == 0
        assert time.monotonic() - t0 < 30
    checkpoints = list((data / "jobs" / job.id / "checkpoints").glob("checkpoint-*/tunewire-complete.json"))
    assert checkpoints, "the worker saved no checkpoint on SIGTERM"
    again = process_factory(data)
    with tunewire.Client(again.address) as c:
        done = c.wait(job.id)
        events = list(c.stream_metrics(job.id))
    assert [e.seq for e in events] == list(range(1, done.last_seq + 1))
    assert done.attempts == 2
    log = (data / "jobs" / job.id / "worker.log").read_text()
    assert f"resuming from {checkpoints[0].parent.name}" in log


def test_health_goes_not_serving_as_soon_as_shutdown_starts(server, client):
    import asyncio

    write_data(server.settings.data_dir)
    job = client.submit(long_spec(max_steps=100000))
    first(client, job.id, TrainLog)
    stopping = asyncio.run_coroutine_threadsafe(server.server.stop(grace=5), server.loop)
    wait_for(lambda: not client.health(timeout=1), timeout=5)
    stopping.result(60)


def test_kill_9_restart_falls_back_past_a_broken_newest_checkpoint(process_factory, tmp_path):
    data = tmp_path / "d"
    write_data(data)
    server = process_factory(data)
    with tunewire.Client(server.address) as c:
        job = c.submit(long_spec(max_steps=100000, save_steps=20))
        seen = []
        for event in c.stream_metrics(job.id):
            if isinstance(event.data, CheckpointSaved):
                seen.append(event.data.step)
                if len(seen) == 2:
                    break
    pid = worker_pid(data, job.id)
    server.signal(signal.SIGKILL)
    server.wait()
    wait_for(lambda: not alive(pid), timeout=5)  # the worker died with its server
    ckpts = sorted((data / "jobs" / job.id / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name[11:]))
    newest, previous = ckpts[-1], ckpts[-2]
    (newest / "trainer_state.json").write_text("{")  # torn write: sizes no longer match the marker
    again = process_factory(data)
    with tunewire.Client(again.address) as c:
        wait_for(lambda: f"resuming from {previous.name}" in
                 (data / "jobs" / job.id / "worker.log").read_text(), timeout=60)
        c.cancel(job.id)
        assert c.wait(job.id, raise_on_failure=False).state == JobState.CANCELLED
