"""Issue 12 item 11: the data disk fills while a job runs. A real small tmpfs is the server's data dir."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

import tunewire
from tests import tiny
from tests.robust.test_faults import first, long_spec, short_spec
from tests.support.disk import fill, tmpfs
from tests.support.server_process import ServerProcess
from tests.support.waiting import wait_for
from tunewire import JobState, StateChange, TrainLog

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MB tmpfs, unmounted afterwards."""
    with tmpfs(tmp_path / "disk", 48) as mount:
        yield mount


def write_data(root: Path) -> None:
    tiny.write_jsonl(root / "train.jsonl", tiny.sentiment_rows(32))


def logging_every_step(max_steps=100000):
    spec = long_spec(max_steps=max_steps)
    spec["hyperparameters"].update(logging_steps=1, save_strategy="no")
    return spec


def test_a_disk_that_fills_while_a_job_runs_fails_that_job_and_the_queue_goes_on(server_factory, small_disk,
                                                                                    tmp_path):
    datasets = tmp_path / "datasets"
    write_data(datasets)
    st = server_factory(data_dir=small_disk / "data", dataset_root=datasets, min_free_disk_mb=0)
    manager = st.server.manager

    async def serving():
        return manager.serving()

    with tunewire.Client(st.address, timeout=30) as c:
        running = c.submit(logging_every_step())
        waiting = c.submit(short_spec())
        first(c, running.id, TrainLog)
        assert st.run(serving())
        filler = fill(small_disk)
        try:
            wait_for(lambda: not st.run(serving()), timeout=30)
            wait_for(lambda: not c.health(timeout=1), timeout=10)  # gRPC health follows manager.serving()
            # Submits are refused with RESOURCE_EXHAUSTED: by the free-space floor, and by the full disk
            # itself where the floor is off.
            with pytest.raises(tunewire.ResourceExhaustedError):
                c.submit(short_spec())
            st.settings.min_free_disk_mb = 1
            with pytest.raises(tunewire.ResourceExhaustedError, match="min_free_disk_mb"):
                c.submit(short_spec())
            st.settings.min_free_disk_mb = 0
            time.sleep(1)  # the scheduler keeps trying; nothing changes while the disk stays full
            assert c.get(running.id).state == JobState.RUNNING
            assert c.get(waiting.id).state == JobState.QUEUED
            assert not st.run(serving())
        finally:
            filler.unlink()
        failed = c.wait(running.id, raise_on_failure=False)
        assert failed.state == JobState.FAILED
        assert (failed.error.code, failed.error.kind) == ("DISK_FULL", "SYSTEM")
        assert c.wait(waiting.id).state == JobState.SUCCEEDED
        assert st.run(serving())
        wait_for(lambda: c.health(timeout=1), timeout=10)
        events = list(c.stream_metrics(running.id))
        assert [e.seq for e in events] == list(range(1, len(events) + 1))  # no gap where the disk was full
        assert isinstance(events[-1].data, StateChange) and events[-1].data.state == JobState.FAILED
        assert len(list(c.list_jobs())) == 2  # the refused submits left nothing behind
        assert sorted(p.name for p in st.settings.jobs_dir.iterdir()) == sorted([running.id, waiting.id])


def test_sigterm_with_a_full_disk_stops_cleanly(models_root, small_disk, tmp_path):
    datasets = tmp_path / "datasets"
    write_data(datasets)
    data = ["--data-dir", str(small_disk / "data"), "--dataset-root", str(datasets)]
    # The server's own log lies off the full disk (its data dir is the last --data-dir).
    server = ServerProcess(tmp_path / "logs", models_root, *data, "--min-free-disk-mb", "0").start(30)
    filler = None
    try:
        with tunewire.Client(server.address, timeout=30) as c:
            job = c.submit(logging_every_step())
            first(c, job.id, TrainLog)
            filler = fill(small_disk)
            wait_for(lambda: "the job's end is kept" in server.log_path.read_text(errors="replace"), timeout=60)
        server.signal(signal.SIGTERM)
        assert server.wait(60) == 0
        log = server.log_path.read_text(errors="replace")
        assert "Traceback" not in log and "sqlite3" not in log, log[-3000:]
    finally:
        server.stop()
        if filler is not None:
            filler.unlink()
    again = ServerProcess(tmp_path / "logs", models_root, *data).start(30)
    try:
        with tunewire.Client(again.address, timeout=30) as c:  # the next start resolves the job
            assert c.get(job.id).state in (JobState.QUEUED, JobState.RUNNING, JobState.FAILED)
            c.cancel(job.id)
            assert c.wait(job.id, raise_on_failure=False).state in (JobState.CANCELLED, JobState.FAILED)
    finally:
        again.stop()
