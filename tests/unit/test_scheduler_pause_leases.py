"""Pause and resume across replicas (one PostgreSQL database, tests/unit/test_scheduler_leases.py's
Cluster and scripted workers): a pause or resume through any replica reaches the replica running the job.
No heartbeat, sweep or poll runs within a test unless it sets one: a NOTIFY must carry each request.
"""

from __future__ import annotations

from tests.unit import test_scheduler_leases
from tests.unit.test_scheduler import LONG, FakeLauncher, until
from tests.unit.test_scheduler_leases import Cluster, expire, queue, ready, states
from tunewire_server.jobs.states import JobState
from tunewire_server.workers.process import CHECKPOINT_SIGNAL

cluster = test_scheduler_leases.cluster  # the fixture: cluster(body), body(Cluster)


def test_a_pause_through_another_replica_checkpoints_the_job_and_frees_the_replica_running_it(cluster):
    launcher = FakeLauncher(LONG)  # r1: job-a trains until paused; any later job finishes

    async def body(c: Cluster):
        queue(c.store, c.jobs_dir, "job-a")
        one = await c.replica(launcher, "r1")
        await until(ready(launcher))
        spare = FakeLauncher()
        other = await c.replica(spare, "r2")
        assert (await other.pause("job-a")).state == JobState.PAUSING
        await until(lambda: c.store.get_job("job-a").state == JobState.PAUSED)
        assert launcher.workers[0].signals == [CHECKPOINT_SIGNAL]
        paused = [e.payload for e in c.store.events_after("job-a", 0) if e.kind == "state_change"][-1]
        assert paused["step"] == 2 and c.store.lease("job-a") is None  # released: no replica holds it
        await until(lambda: one.scheduler.running is None)  # r1 is free
        queue(c.store, c.jobs_dir, "job-b")
        await until(lambda: c.store.get_job("job-b").terminal)
        assert sorted(launcher.ran() + spare.ran()) == ["job-a", "job-b"]  # the paused job was left alone

        assert (await one.resume("job-a")).state in (JobState.QUEUED, JobState.RUNNING)  # r2 may be quick
        await until(lambda: c.store.get_job("job-a").terminal)
        assert states(c.store, "job-a") == ["QUEUED", "RUNNING", "PAUSING", "PAUSED", "QUEUED", "RUNNING",
                                            "SUCCEEDED"]
        job = c.store.get_job("job-a")
        assert (job.attempts, job.pauses) == (2, 1)

    cluster(body)


def test_a_pausing_job_whose_replica_died_is_paused_by_the_taker(cluster):
    async def body(c: Cluster):
        queue(c.store, c.jobs_dir, "job-a")
        c.store.claim_next(owner="r0", lease_s=60)  # a replica r0 runs it
        c.store.append_event("job-a", "state_change", {"state": "PAUSING", "message": "pause requested"},
                             {"state": JobState.PAUSING})
        assert c.store.lease("job-a").owner == "r0"  # PAUSING keeps the lease: r0 is still saving
        expire(c.url, "job-a")  # r0 died before it paused the job
        await c.replica(FakeLauncher(), "r2")  # its start takes over what expired
        assert states(c.store, "job-a") == ["QUEUED", "RUNNING", "PAUSING", "PAUSED"]
        job = c.store.get_job("job-a")
        assert (job.pauses, c.store.lease("job-a")) == (1, None)

    cluster(body)
