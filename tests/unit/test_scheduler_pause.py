"""Pause and resume (JobManager.pause/resume, jobs/scheduler.py, jobs/recovery.py) with the scripted workers
of tests/unit/test_scheduler.py: a real SQLite store, no torch, no gRPC, no processes.

A LONG worker trains until a signal comes; on CHECKPOINT_SIGNAL (what a pause sends, as a shutdown does)
it reports checkpoint-2 and exits 0 without a result.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.unit import test_scheduler
from tests.unit.test_scheduler import (
    LONG,
    MODEL,
    READY,
    REQUEST,
    TRAINING,
    FakeLauncher,
    Gate,
    Send,
    Store,
    ended,
    error,
    queue,
    settings,
    states,
    until,
)
from tunewire_server.errors import FailedPrecondition, NotFound
from tunewire_server.jobs.manager import JobManager
from tunewire_server.jobs.outcome import Outcome
from tunewire_server.jobs.states import JobState
from tunewire_server.protocol import JobError
from tunewire_server.workers.process import CHECKPOINT_SIGNAL, STOP_SIGNAL

run = test_scheduler.run  # the fixture: run(body, launcher, before=..., **settings)

FINISH = [*TRAINING, MODEL, Send("result", {"metrics": {"eval_loss": 0.25}})]


def state_events(store: Store, job_id: str) -> list[dict]:
    return [e.payload for e in store.events_after(job_id, 0) if e.kind == "state_change"]


def is_state(store: Store, job_id: str, state: JobState):
    return lambda: store.get_job(job_id).state == state


def started(launcher: FakeLauncher, n: int = 1):
    """The n-th worker has its job."""
    return lambda: len(launcher.workers) >= n and launcher.workers[n - 1].requests


# --- pause ------------------------------------------------------------------------------------------


def test_a_running_job_pauses_at_a_checkpoint_frees_the_worker_and_resumes_from_it(run):
    launcher = FakeLauncher(LONG)  # job-a trains until paused; later workers finish their job

    async def body(manager, store):
        await until(started(launcher))
        paused = await manager.pause("job-a")
        assert paused.state == JobState.PAUSING
        await until(is_state(store, "job-a", JobState.PAUSED))
        assert launcher.workers[0].signals == [CHECKPOINT_SIGNAL]
        last = state_events(store, "job-a")[-1]
        assert (last["state"], last["step"], last["message"]) == ("PAUSED", 2, "paused at step 2")
        await until(ended(store, "job-b"))  # the freed worker slot ran the next queued job
        assert launcher.ran() == ["job-a", "job-b"]
        assert store.get_job("job-a").state == JobState.PAUSED  # and nothing claimed the paused one

        resumed = await manager.resume("job-a")
        assert resumed.state in (JobState.QUEUED, JobState.RUNNING)
        await until(ended(store, "job-a"))
        assert launcher.ran() == ["job-a", "job-b", "job-a"]
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "PAUSING", "PAUSED", "QUEUED", "RUNNING",
                                          "SUCCEEDED"]
        job = store.get_job("job-a")
        assert (job.attempts, job.pauses, job.error) == (2, 1, None)

    run(body, launcher, before=lambda store: (queue(store, "job-a"), queue(store, "job-b")))


def test_a_queued_job_pauses_at_once_and_resumes_at_the_back_of_the_queue(run):
    launcher = FakeLauncher(LONG)

    async def body(manager, store):
        await until(started(launcher))
        assert (await manager.pause("job-b")).state == JobState.PAUSED
        assert (await manager.resume("job-b")).state == JobState.QUEUED  # now behind job-c
        assert (await manager.pause("job-d")).state == JobState.PAUSED
        await manager.cancel("job-a")
        await until(ended(store, "job-b", "job-c"))
        assert launcher.ran() == ["job-a", "job-c", "job-b"]  # job-d stays paused: never claimed
        assert states(store, "job-b") == ["QUEUED", "PAUSED", "QUEUED", "RUNNING", "SUCCEEDED"]
        assert states(store, "job-d") == ["QUEUED", "PAUSED"]
        assert (store.get_job("job-b").attempts, store.get_job("job-b").pauses) == (1, 0)  # no attempt paused

    run(body, launcher, before=lambda store: [queue(store, j) for j in ("job-a", "job-b", "job-c", "job-d")])


def test_pausing_a_pausing_or_paused_job_changes_nothing(run):
    gate = asyncio.Event()
    launcher = FakeLauncher([Gate(gate), *LONG])

    async def body(manager, store):
        await until(lambda: launcher.workers)
        assert (await manager.pause("job-a")).state == JobState.PAUSING  # the worker is still starting
        assert (await manager.pause("job-a")).state == JobState.PAUSING
        gate.set()  # once it has the job it is told to checkpoint and stop
        await until(is_state(store, "job-a", JobState.PAUSED))
        assert (await manager.pause("job-a")).state == JobState.PAUSED
        assert launcher.workers[0].signals == [CHECKPOINT_SIGNAL]
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "PAUSING", "PAUSED"]

    run(body, launcher, before=lambda store: queue(store, "job-a"))


def test_a_paused_attempt_uses_up_no_retry(run):
    failing = [READY, REQUEST, error("SYSTEM", "CUDA_OOM"), test_scheduler.Exit(1)]
    launcher = FakeLauncher(LONG, failing)

    async def body(manager, store):
        await until(started(launcher))
        await manager.pause("job-a")
        await until(is_state(store, "job-a", JobState.PAUSED))
        await manager.resume("job-a")
        await until(ended(store, "job-a"))
        # max_retries 1: attempt 2 crashed and was still retried, because attempt 1 ended in a pause
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "PAUSING", "PAUSED", "QUEUED", "RUNNING", "QUEUED",
                                          "RUNNING", "SUCCEEDED"]
        job = store.get_job("job-a")
        assert (job.attempts, job.pauses) == (3, 1)

    run(body, launcher, before=lambda store: queue(store, "job-a", max_retries=1))


def test_a_terminal_job_cannot_be_paused_or_resumed_and_a_missing_one_is_not_found(run):
    async def body(manager, store):
        await until(ended(store, "job-a"))
        with pytest.raises(FailedPrecondition, match="SUCCEEDED"):
            await manager.pause("job-a")
        with pytest.raises(FailedPrecondition, match="SUCCEEDED"):
            await manager.resume("job-a")
        with pytest.raises(NotFound):
            await manager.pause("job-nope")
        with pytest.raises(NotFound):
            await manager.resume("job-nope")
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "SUCCEEDED"]

    run(body, FakeLauncher(), before=lambda store: queue(store, "job-a"))


def test_resuming_a_queued_or_running_job_changes_nothing(run):
    launcher = FakeLauncher(LONG)

    async def body(manager, store):
        await until(started(launcher))
        assert (await manager.resume("job-a")).state == JobState.RUNNING
        assert (await manager.resume("job-b")).state == JobState.QUEUED
        assert launcher.workers[0].signals == []
        await manager.cancel("job-a")
        await until(ended(store, "job-a", "job-b"))
        assert states(store, "job-b") == ["QUEUED", "RUNNING", "SUCCEEDED"]

    run(body, launcher, before=lambda store: (queue(store, "job-a"), queue(store, "job-b")))


# --- cancel and resume around a pause ------------------------------------------------------------------


def test_cancel_of_a_paused_job_ends_it_cancelled(run):
    launcher = FakeLauncher(LONG)

    async def body(manager, store):
        await until(started(launcher))
        await manager.pause("job-a")
        await until(is_state(store, "job-a", JobState.PAUSED))
        assert (await manager.cancel("job-a")).state == JobState.CANCELLED
        with pytest.raises(FailedPrecondition):
            await manager.resume("job-a")
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "PAUSING", "PAUSED", "CANCELLED"]
        assert launcher.ran() == ["job-a"]

    run(body, launcher, before=lambda store: queue(store, "job-a"))


def test_cancel_while_pausing_wins(run):
    gate = asyncio.Event()
    launcher = FakeLauncher([Gate(gate), *LONG])

    async def body(manager, store):
        await until(lambda: launcher.workers)
        assert (await manager.pause("job-a")).state == JobState.PAUSING
        assert (await manager.cancel("job-a")).state == JobState.CANCELLING
        with pytest.raises(FailedPrecondition, match="CANCELLING"):
            await manager.pause("job-a")
        gate.set()
        await until(ended(store, "job-a"))
        assert launcher.workers[0].signals == [STOP_SIGNAL]
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "PAUSING", "CANCELLING", "CANCELLED"]

    run(body, launcher, before=lambda store: queue(store, "job-a"))


def test_a_resume_before_the_worker_was_told_to_pause_withdraws_the_pause(run):
    gate = asyncio.Event()
    launcher = FakeLauncher([Gate(gate), READY, REQUEST, *FINISH, test_scheduler.Exit(0)])

    async def body(manager, store):
        await until(lambda: launcher.workers)
        assert (await manager.pause("job-a")).state == JobState.PAUSING
        assert (await manager.resume("job-a")).state == JobState.RUNNING
        gate.set()
        await until(ended(store, "job-a"))
        assert launcher.workers[0].signals == []
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "PAUSING", "RUNNING", "SUCCEEDED"]

    run(body, launcher, before=lambda store: queue(store, "job-a"))


def test_a_resume_after_the_worker_stopped_for_the_pause_queues_the_job_again(tmp_path):
    """The job is PAUSING and its worker has stopped at the checkpoint, its outcome not stored yet: a
    resume makes it RUNNING again, and the pause's outcome then queues it (counted as a pause)."""
    async def main():
        s = settings(tmp_path)
        store = Store(s.db_path)
        manager = JobManager(s, store, launcher=FakeLauncher())
        queue(store, "job-a")
        store.claim_next()  # RUNNING, no attempt of this process names it
        assert (await manager.pause("job-a")).state == JobState.PAUSING
        assert (await manager.resume("job-a")).state == JobState.RUNNING
        await manager.scheduler.conclude("job-a", Outcome(JobState.PAUSED, "paused at step 2", pause=True, step=2))
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "PAUSING", "RUNNING", "QUEUED"]
        job = store.get_job("job-a")
        assert (job.state, job.attempts, job.pauses) == (JobState.QUEUED, 1, 1)
        store.close()

    asyncio.run(main())


def test_a_pause_that_comes_as_a_failed_attempt_ends_pauses_it_instead_of_retrying(tmp_path):
    """The worker crashed (a retry is decided) and the pause comes before that outcome is stored."""
    async def main():
        s = settings(tmp_path)
        store = Store(s.db_path)
        manager = JobManager(s, store, launcher=FakeLauncher())
        queue(store, "job-a", max_retries=2)
        store.claim_next()
        assert (await manager.pause("job-a")).state == JobState.PAUSING
        await manager.scheduler.conclude("job-a", Outcome(JobState.QUEUED, "crashed; retrying",
                                                          error=JobError.system("X", "crashed")))
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "PAUSING", "PAUSED"]
        job = store.get_job("job-a")
        assert (job.pauses, job.error["code"]) == (0, "X")  # a failed attempt, not a pause
        store.close()

    asyncio.run(main())


# --- streams and restarts ----------------------------------------------------------------------------


def test_a_paused_jobs_stream_stays_open_and_follows_it_once_resumed_even_across_a_restart(tmp_path):
    async def main():
        s = settings(tmp_path)
        store = Store(s.db_path)
        queue(store, "job-a")
        launcher = FakeLauncher(LONG)
        manager = JobManager(s, store, launcher=launcher)
        await manager.start()
        await until(started(launcher))
        await manager.pause("job-a")
        await until(is_state(store, "job-a", JobState.PAUSED))
        await manager.stop()  # a restart while the job is paused

        manager = JobManager(s, store, launcher=FakeLauncher())
        await manager.start()
        seen: list = []

        async def follow():
            async for batch in manager.event_batches("job-a", 0):
                seen.extend(e.payload.get("state") for e in batch if e.kind == "state_change")

        follower = asyncio.create_task(follow())
        await until(lambda: seen[-1:] == ["PAUSED"])
        await asyncio.sleep(0.05)
        assert not follower.done()  # PAUSED is not the end of the stream
        await manager.resume("job-a")
        await asyncio.wait_for(follower, 10)
        assert seen == ["QUEUED", "RUNNING", "PAUSING", "PAUSED", "QUEUED", "RUNNING", "SUCCEEDED"]
        await manager.stop()
        store.close()

    asyncio.run(main())


def test_a_job_left_pausing_by_a_previous_server_is_paused_at_the_next_start(tmp_path):
    async def main():
        s = settings(tmp_path)
        store = Store(s.db_path)
        queue(store, "job-a")
        store.claim_next()
        store.append_event("job-a", "state_change", {"state": "PAUSING", "message": "pause requested"},
                           {"state": JobState.PAUSING})
        launcher = FakeLauncher()
        manager = JobManager(s, store, launcher=launcher)
        await manager.start()
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "PAUSING", "PAUSED"]
        assert store.get_job("job-a").pauses == 1
        await manager.resume("job-a")
        await until(ended(store, "job-a"))
        await manager.stop()
        assert states(store, "job-a")[-3:] == ["QUEUED", "RUNNING", "SUCCEEDED"]
        store.close()

    asyncio.run(main())
