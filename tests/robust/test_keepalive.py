"""Long quiet streams: the SDK's keepalive pings and the server's ping policy agree (issue 12, item 13).

An hour of StreamMetrics at the default keepalive_s of 30 s is 120 ping intervals. Here both sides use
keepalive_s = 1 and the stream stays quiet (the training worker is stopped with SIGSTOP, so no event is
sent) for QUIET_S = 25 s: 25 intervals, each side pinging. grpc's default policy ends a connection
after the third ping that comes sooner than five minutes after the previous one, i.e. within about 3 s
here, so 25 intervals hold that failure eight times over. The stream is read with reconnect=False, so a
reconnect the SDK would otherwise hide shows up as an error.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import grpc
import pytest

import tunewire
from tests import tiny
from tests.support.waiting import wait_for
from tunewire import JobState, StateChange
from tunewire._requests import HEALTH_CHECK_REQUEST

pytestmark = pytest.mark.slow

QUIET_S = 25.0
SPEC = {
    "base_model": "tiny-bert",
    "classification": {},
    "train_dataset": {"file": {"path": "train.jsonl"}},
    "hyperparameters": {"max_steps": 100_000, "save_strategy": "no", "per_device_train_batch_size": 4,
                        "logging_steps": 1},
}


def _running_worker(st, client):
    """Submit a long job; return it and its training worker's process group once it runs."""
    tiny.write_jsonl(st.settings.dataset_root / "train.jsonl", tiny.sentiment_rows(16))
    job = client.submit(SPEC)
    pid_file = st.settings.jobs_dir / job.id / "worker.pid"
    pid = wait_for(lambda: pid_file.exists() and int(pid_file.read_text() or 0), timeout=120)
    wait_for(lambda: client.get(job.id).state == JobState.RUNNING, timeout=120)
    return job, os.getpgid(pid)


def _stream(address: str, job_id: str, keepalive_s: float) -> tuple[list, BaseException | None, float]:
    """A job's events through an SDK client at `keepalive_s`, on one call (no reconnect): the events,
    the error that ended the stream (None when the job ended it) and how long it ran."""
    events, error, started = [], None, time.monotonic()
    try:
        with tunewire.Client(address, keepalive_s=keepalive_s) as client:
            for event in client.stream_metrics(job_id, reconnect=False):
                events.append(event)
    except tunewire.TunewireError as exc:
        error = exc
    return events, error, time.monotonic() - started


def test_a_quiet_stream_outlives_many_keepalive_intervals(server_factory, capfd):
    st = server_factory(keepalive_s=1)
    with tunewire.Client(st.address, timeout=30) as control:
        job, group = _running_worker(st, control)
        os.killpg(group, signal.SIGSTOP)  # no more events: the stream goes quiet
        resumed = threading.Event()

        def resume_and_cancel():
            if not resumed.is_set():
                resumed.set()
                os.killpg(group, signal.SIGCONT)
                control.cancel(job.id)

        try:
            # one call, open through QUIET_S of silence; then the job is cancelled, which ends it
            timer = threading.Timer(QUIET_S, resume_and_cancel)
            timer.start()
            events, error, elapsed = _stream(st.address, job.id, keepalive_s=1)
            timer.cancel()
        finally:
            resume_and_cancel()
    assert error is None, f"the stream broke after {elapsed:.1f} s: {error!r}"
    assert elapsed >= QUIET_S
    last = events[-1].data
    assert isinstance(last, StateChange) and last.state == JobState.CANCELLED
    assert "too_many_pings" not in capfd.readouterr().err


def test_a_client_pinging_faster_than_the_server_accepts_is_cut_off(server_factory):
    """The check above is sharp, and the policy is enforced, not waived: with the settings disagreeing as
    they did (the server at keepalive_s 30, the client pinging every second) a quiet stream is cut off
    with too_many_pings within seconds. The stream is grpc.health.v1 Watch, through the SDK's channel:
    it sends the status once, then nothing."""
    st = server_factory(keepalive_s=30)
    with tunewire.Client(st.address, keepalive_s=1) as client:
        watch = client._channel.unary_stream("/grpc.health.v1.Health/Watch")
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            for _ in watch(HEALTH_CHECK_REQUEST, timeout=QUIET_S):
                pass
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "ping" in info.value.details().lower()
    assert time.monotonic() - started < QUIET_S
