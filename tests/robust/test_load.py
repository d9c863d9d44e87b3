"""Load: many subscribers, churned streams, many jobs in a row. Loopback only, bounded in count and time."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

import tunewire
from tests import tiny
from tests.support.specs import tiny_classification
from tunewire import JobState, TrainLog
from tunewire.v1 import tuning_service_pb2 as pb
from tunewire.v1 import tuning_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow

POLLER = """
import json, sys, threading, time
import tunewire
address, job_id = sys.argv[1], sys.argv[2]
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
latencies = []
with tunewire.Client(address) as c:
    while not stop.is_set():
        t0 = time.perf_counter()
        c.get(job_id)
        latencies.append(time.perf_counter() - t0)
        time.sleep(0.01)
print(json.dumps(latencies))
"""


def spec(max_steps: int, logging_steps: int = 1):
    return tiny_classification(max_steps=max_steps, logging_steps=logging_steps, save_strategy="no")


def test_200_subscribers_no_gaps_and_getjob_stays_fast(process_factory, tmp_path):
    data = tmp_path / "d"
    tiny.write_jsonl(data / "datasets" / "train.jsonl", tiny.sentiment_rows(32))
    server = process_factory(data)
    with tunewire.Client(server.address) as c:
        job = c.submit(spec(max_steps=640, logging_steps=8))
    # GetJob latency is measured from a process of its own, so that this process's 200 streams
    # (and its GIL) do not count against the server.
    poller = subprocess.Popen([sys.executable, "-c", POLLER, server.address, job.id], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)

    async def subscribers():
        # The raw stub keeps this process's own CPU use down: the server is what is measured.
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.TuningServiceStub(channel)

            async def one():
                return [r.event.seq async for r in stub.StreamMetrics(pb.StreamMetricsRequest(job_id=job.id))]

            return await asyncio.gather(*(one() for _ in range(200)))

    try:
        results = asyncio.run(asyncio.wait_for(subscribers(), 300))
    finally:
        out, _ = poller.communicate("stop\n", timeout=60)
    latencies = json.loads(out)
    with tunewire.Client(server.address) as c:
        final = c.get(job.id)
    assert final.state == JobState.SUCCEEDED
    expected = list(range(1, final.last_seq + 1))
    assert final.last_seq > 75  # a log every 8 steps (~5 a second), each to 200 streams
    assert all(r == expected for r in results), "a subscriber saw a gap, a duplicate or a reordering"
    q = statistics.quantiles(latencies, n=100)
    print(f"GetJob p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms over {len(latencies)} calls")
    assert len(latencies) > 50 and q[98] < 0.050, f"GetJob p99 {q[98] * 1000:.1f} ms"


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_1000_subscribe_then_cancel_cycles_leak_nothing(server, client):
    tiny.write_jsonl(server.settings.dataset_root / "train.jsonl", tiny.sentiment_rows(32))
    job = client.submit(spec(max_steps=1_000_000, logging_steps=50))
    next(e for e in client.stream_metrics(job.id) if isinstance(e.data, TrainLog))

    def server_tasks() -> int:
        async def count():
            return len(asyncio.all_tasks())

        return server.run(count())

    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.TuningServiceStub(channel)

        def cycles(n):
            for _ in range(n):
                call = stub.StreamMetrics(pb.StreamMetricsRequest(job_id=job.id))
                next(call)
                call.cancel()

        cycles(50)  # warm up channel and server structures
        time.sleep(0.5)
        tasks, fds = server_tasks(), _fds()
        cycles(1000)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (server_tasks() > tasks or _fds() > fds + 5):
            time.sleep(0.2)
        assert server_tasks() <= tasks, "streams left tasks behind"
        assert _fds() <= fds + 5, "streams left file descriptors open"
    assert server.server.manager.hub.open_streams == 0
    client.cancel(job.id)
    client.wait(job.id, raise_on_failure=False)


def _children(pid: int) -> list[tuple[int, str]]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                out.append((int(entry.name), cmd))
    return out


def _orphan_workers() -> list[int]:
    return [pid for pid, cmd in _children(1) if "tunewire_server.worker" in cmd]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_20_jobs_in_a_row_leave_no_orphans_and_memory_flat(process_factory, tmp_path):
    data = tmp_path / "d"
    tiny.write_jsonl(data / "datasets" / "train.jsonl", tiny.sentiment_rows(16))
    orphans_before = set(_orphan_workers())
    server = process_factory(data)
    rss = []
    with tunewire.Client(server.address) as c:
        for i in range(20):
            job = c.submit(spec(max_steps=1))
            assert c.wait(job.id).state == JobState.SUCCEEDED
            if i in (4, 19):
                rss.append(_rss_mb(server.proc.pid))
    workers = [cmd for _, cmd in _children(server.proc.pid) if "tunewire_server.worker" in cmd]
    assert len(workers) <= 1, workers  # only the warm worker for the next job
    assert set(_orphan_workers()) <= orphans_before
    assert rss[1] - rss[0] < 15, f"control plane grew from {rss[0]:.0f} MB to {rss[1]:.0f} MB over 15 jobs"
    assert rss[1] < 150, f"control plane uses {rss[1]:.0f} MB"
