"""The scheduler's leases (jobs/scheduler.py, jobs/recovery.py, jobs/events.py with a shared store): several
JobManagers in one process, each a replica with its own PostgresStore on one database and a fake training
launcher (tests/unit/test_scheduler.py's scripted workers). No torch, no gRPC, no processes.

Settings make each path the only one that can pass: a heartbeat far beyond the test's wait where a
notice must do the work, a poll far beyond it where a NOTIFY must wake a replica.
"""

from __future__ import annotations

import asyncio
import json

import psycopg
import pytest

from tests.unit.test_scheduler import (
    BLOCK,
    LONG,
    READY,
    REQUEST,
    SUCCESS,
    FakeLauncher,
    Gate,
    Send,
    settings,
    until,
)
from tunewire_server.jobs.manager import JobManager
from tunewire_server.jobs.recovery import recover
from tunewire_server.jobs.states import JobState
from tunewire_server.store import Lease, LeaseLost, SQLiteStore, StateChanged
from tunewire_server.store.postgres import PostgresStore
from tunewire_server.workers.process import CHECKPOINT_SIGNAL, STOP_SIGNAL

SLOW = dict(lease_s=120, heartbeat_s=60, event_poll_s=60)  # no heartbeat, sweep or poll within a test


def queue(store, jobs_dir, job_id: str, max_retries: int = 0) -> None:
    """Store a QUEUED job as submit() would (its folder in the shared data folder), with an empty plan."""
    (jobs_dir / job_id).mkdir(parents=True, exist_ok=True)
    spec = json.dumps({"base_model": "m", "max_retries": max_retries})
    store.create_job(job_id, spec, None, ("state_change", {"state": "QUEUED", "message": "queued"}), "{}")


def states(store, job_id: str) -> list[str]:
    return [e.payload["state"] for e in store.events_after(job_id, 0) if e.kind == "state_change"]


def expire(url: str, job_id: str) -> None:
    """Make the job's lease run out now, as if its replica stopped renewing it (it died)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET lease_expires_at = 0 WHERE id = %s", (job_id,))


class Cluster:
    """Replicas sharing one database and one data folder; `store` is a client's own connection."""

    def __init__(self, tmp_path, url: str) -> None:
        self.tmp_path, self.url = tmp_path, url
        self.store = PostgresStore(url)
        self.jobs_dir = tmp_path / "data" / "jobs"
        self.managers: list[JobManager] = []

    async def replica(self, launcher: FakeLauncher, name: str, **overrides) -> JobManager:
        manager = JobManager(settings(self.tmp_path, replica_id=name, **{**SLOW, **overrides}),
                             PostgresStore(self.url), launcher=launcher)
        await manager.start()
        self.managers.append(manager)
        return manager

    async def close(self) -> None:
        for manager in self.managers:
            await manager.stop()
            manager.store.close()
        self.store.close()


@pytest.fixture
def cluster(tmp_path, postgres_url):
    """cluster(body): asyncio.run(body(Cluster)), every replica stopped after."""
    def go(body):
        async def main():
            c = Cluster(tmp_path, postgres_url)
            try:
                await body(c)
            finally:
                await c.close()
        asyncio.run(main())
    return go


def ready(launcher: FakeLauncher, index: int = 0):
    return lambda: len(launcher.workers) > index and launcher.workers[index].requests


# --- claims, heartbeats, takeovers ---------------------------------------------------------------


def test_a_claim_holds_the_lease_under_the_replica_id_and_the_heartbeat_renews_it(cluster):
    launcher = FakeLauncher(LONG)

    async def body(c: Cluster):
        queue(c.store, c.jobs_dir, "job-a")
        one = await c.replica(launcher, "r1", lease_s=60, heartbeat_s=0.05)
        await until(ready(launcher))
        first = c.store.lease("job-a")
        assert (first.owner, first.attempt, first.expired) == ("r1", 1, False)
        await until(lambda: c.store.lease("job-a").expires_at > first.expires_at)  # renewed
        await one.cancel("job-a")
        await until(lambda: c.store.get_job("job-a").terminal)
        assert c.store.lease("job-a") is None  # ended: released

    cluster(body)


def test_a_replica_whose_lease_was_taken_over_kills_its_worker_and_writes_nothing_more(cluster):
    launcher = FakeLauncher(LONG)

    async def body(c: Cluster):
        queue(c.store, c.jobs_dir, "job-a")
        await c.replica(launcher, "r1", lease_s=60, heartbeat_s=0.05)
        await until(ready(launcher))
        expire(c.url, "job-a")  # r1 looks dead to the others (it stopped renewing, say a long GC pause)
        assert await recover(c.managers[0].transitions, c.jobs_dir, 3) == ["job-a"]  # r2's sweep, here
        c.store.claim_next(owner="r2", lease_s=60)
        await until(lambda: launcher.workers[0]._exit.done())
        assert await launcher.workers[0].wait() == -9  # killed: it must not write a checkpoint any more
        await until(lambda: c.managers[0].scheduler.running is None)
        assert states(c.store, "job-a") == ["QUEUED", "RUNNING", "QUEUED", "RUNNING"]
        assert c.store.lease("job-a").owner == "r2"

    cluster(body)


def test_events_of_a_worker_whose_lease_was_taken_over_are_refused_and_it_is_killed(cluster):
    gate = asyncio.Event()
    launcher = FakeLauncher([READY, REQUEST, Gate(gate),
                             Send("train_log", {"step": 1, "max_steps": 9, "epoch": 0.1, "progress": 0.1}), BLOCK])

    async def body(c: Cluster):
        queue(c.store, c.jobs_dir, "job-a")
        await c.replica(launcher, "r1")  # no heartbeat within the test: the fenced write must tell
        await until(ready(launcher))
        old = c.store.lease("job-a")
        expire(c.url, "job-a")
        c.store.append_event("job-a", "state_change", {"state": "QUEUED"}, {"state": JobState.QUEUED},
                             fence=Lease(old.owner, old.attempt, expired=True))
        c.store.claim_next(owner="r2", lease_s=60)  # r2 runs it now
        gate.set()  # the worker reports progress: r1's write of it is refused
        assert await asyncio.wait_for(launcher.workers[0].wait(), 10) == -9
        await until(lambda: c.managers[0].scheduler.running is None)
        assert "train_log" not in [e.kind for e in c.store.events_after("job-a", 0)]
        assert states(c.store, "job-a") == ["QUEUED", "RUNNING", "QUEUED", "RUNNING"]

    cluster(body)


def test_an_expired_lease_is_taken_over_by_the_sweep_and_the_job_resumes_on_the_taker(cluster):
    launcher = FakeLauncher()

    async def body(c: Cluster):
        queue(c.store, c.jobs_dir, "job-a")
        queue(c.store, c.jobs_dir, "job-b")
        c.store.claim_next(owner="dead", lease_s=0)  # job-a: its replica died at once
        c.store.claim_next(owner="alive", lease_s=600)  # job-b: its replica lives on elsewhere
        await c.replica(launcher, "r1", heartbeat_s=0.05)
        await until(lambda: c.store.get_job("job-a").terminal)
        assert states(c.store, "job-a") == ["QUEUED", "RUNNING", "QUEUED", "RUNNING", "SUCCEEDED"]
        assert launcher.ran() == ["job-a"]
        assert c.store.lease("job-b").owner == "alive" and states(c.store, "job-b") == ["QUEUED", "RUNNING"]
        expire(c.url, "job-b")  # now its replica dies too: the next sweep takes it over
        await until(lambda: c.store.get_job("job-b").terminal)
        assert launcher.ran() == ["job-a", "job-b"]

    cluster(body)


def test_a_cancelling_job_whose_replica_died_ends_cancelled(cluster):
    async def body(c: Cluster):
        queue(c.store, c.jobs_dir, "job-a")
        c.store.claim_next(owner="dead", lease_s=0)
        c.store.append_event("job-a", "state_change", {"state": "CANCELLING"}, {"state": JobState.CANCELLING})
        await c.replica(FakeLauncher(), "r1")  # the start's recovery takes it over
        assert states(c.store, "job-a") == ["QUEUED", "RUNNING", "CANCELLING", "CANCELLED"]

    cluster(body)


# --- stop, cancel, wake-ups and events across replicas ---------------------------------------------


def test_stop_checkpoints_and_hands_the_job_over_at_once_to_another_replica(cluster):
    first, second = FakeLauncher(LONG), FakeLauncher()

    async def body(c: Cluster):
        queue(c.store, c.jobs_dir, "job-a")
        one = await c.replica(first, "r1")
        await until(ready(first))
        await c.replica(second, "r2")  # idle: no poll, no sweep within the test; the NOTIFY must wake it
        await one.stop()
        c.managers.remove(one)
        one.store.close()
        assert first.workers[0].signals == [CHECKPOINT_SIGNAL]
        await until(lambda: c.store.get_job("job-a").terminal)
        assert states(c.store, "job-a") == ["QUEUED", "RUNNING", "QUEUED", "RUNNING", "SUCCEEDED"]
        kinds = [(e.kind, e.payload.get("state")) for e in c.store.events_after("job-a", 0)]
        assert kinds[3:5] == [("checkpoint_saved", None), ("state_change", "QUEUED")]  # checkpoint, then over
        assert "handed over" in c.store.events_after("job-a", 0)[4].payload["message"]
        assert second.ran() == ["job-a"]

    cluster(body)


def test_a_cancel_through_another_replica_stops_the_worker_running_here(cluster):
    launcher = FakeLauncher(LONG)

    async def body(c: Cluster):
        queue(c.store, c.jobs_dir, "job-a")
        await c.replica(launcher, "r1")  # no heartbeat within the test: the notice must tell it
        await until(ready(launcher))  # r1 runs it (r2, started after, finds nothing queued)
        other = await c.replica(FakeLauncher(), "r2")
        assert (await other.cancel("job-a")).state == JobState.CANCELLING
        await until(lambda: c.store.get_job("job-a").terminal)
        assert launcher.workers[0].signals == [STOP_SIGNAL]
        assert states(c.store, "job-a") == ["QUEUED", "RUNNING", "CANCELLING", "CANCELLED"]

    cluster(body)


def test_a_job_queued_anywhere_wakes_an_idle_replica(cluster):
    launcher = FakeLauncher()

    async def body(c: Cluster):
        await c.replica(launcher, "r1")  # idle, no poll within the test
        await asyncio.sleep(0.2)  # its first look at the queue found nothing (else the test proves nothing)
        queue(c.store, c.jobs_dir, "job-a")  # another replica's submit
        await until(lambda: c.store.get_job("job-a").terminal)
        assert launcher.ran() == ["job-a"]

    cluster(body)


def test_a_stream_through_a_replica_that_does_not_run_the_job_sees_every_event_in_order(cluster):
    gate = asyncio.Event()
    log = Send("train_log", {"step": 1, "max_steps": 2, "epoch": 0.5, "progress": 0.5})
    launcher = FakeLauncher([READY, REQUEST, log, Gate(gate), log, log, *SUCCESS[2:]])

    async def body(c: Cluster):
        queue(c.store, c.jobs_dir, "job-a")
        await c.replica(launcher, "r1")
        await until(ready(launcher))  # r1 runs it
        other = await c.replica(FakeLauncher(), "r2")  # no poll within the test: notices carry the stream
        seen = []

        async def follow():
            async for batch in other.event_batches("job-a", 0):
                seen.extend(batch)
                if len(seen) >= 3:
                    gate.set()  # the rest comes while the stream is live
        await asyncio.wait_for(follow(), 10)
        stored = c.store.events_after("job-a", 0)
        assert [e.seq for e in seen] == [e.seq for e in stored] == list(range(1, len(stored) + 1))
        assert seen[-1].payload["state"] == "SUCCEEDED"
        assert other.hub.open_streams == 0

    cluster(body)


def test_a_write_expecting_a_state_the_job_left_is_refused_in_both_stores(tmp_path, postgres_url):
    sqlite = SQLiteStore(tmp_path / "t.db")
    postgres = PostgresStore(postgres_url)
    try:
        for store in (sqlite, postgres):
            queue(store, tmp_path / "jobs", "job-a")
            with pytest.raises(StateChanged):
                store.append_event("job-a", "state_change", {"state": "CANCELLING"}, {"state": JobState.CANCELLING},
                                   expect_state=JobState.RUNNING)
            assert states(store, "job-a") == ["QUEUED"]
            store.append_event("job-a", "state_change", {"state": "CANCELLED"}, {"state": JobState.CANCELLED},
                               expect_state=JobState.QUEUED)
            assert states(store, "job-a") == ["QUEUED", "CANCELLED"]
            import shutil
            shutil.rmtree(tmp_path / "jobs")
    finally:
        sqlite.close()
        postgres.close()


def test_sqlite_leases_live_in_the_process_that_claimed(tmp_path):
    """One code path: SQLite takes the same lease calls. A claim's lease holds while its store lives; a
    job a previous process left RUNNING has an expired one, which a fenced takeover may take."""
    store = SQLiteStore(tmp_path / "t.db")
    queue(store, tmp_path / "jobs", "job-a")
    store.claim_next(owner="me", lease_s=30)
    lease = store.lease("job-a")
    assert (lease.owner, lease.attempt, lease.expired) == ("me", 1, False)
    assert store.renew_lease(lease, "job-a", 30) and not store.renew_lease(Lease("other", 1), "job-a", 30)
    assert store.expired_leases() == []
    with pytest.raises(LeaseLost):
        store.append_event("job-a", "train_log", {}, fence=Lease("other", 1))
    store.append_event("job-a", "train_log", {}, fence=lease)
    store.close()
    again = SQLiteStore(tmp_path / "t.db")  # the next process
    try:
        [left] = again.expired_leases()
        old = again.lease("job-a")
        assert left.id == "job-a" and old.expired and old.attempt == 1
        with pytest.raises(LeaseLost):  # not this process's lease
            again.append_event("job-a", "train_log", {}, fence=lease)
        again.append_event("job-a", "state_change", {"state": "QUEUED"}, {"state": JobState.QUEUED},
                           fence=Lease(old.owner, old.attempt, expired=True))
        assert again.lease("job-a") is None and again.expired_leases() == []
    finally:
        again.close()
