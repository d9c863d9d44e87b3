"""Cancel while a job is RUNNING in the store but no worker of this server runs it any more: between its
worker's exit and the store write of its outcome (which waits while the disk is full). The cancel must
still take: the job goes CANCELLING, and an outcome that would retry it ends it CANCELLED instead."""

from __future__ import annotations

import asyncio

from tunewire_server.config import Settings
from tunewire_server.jobs.manager import JobManager
from tunewire_server.jobs.outcome import Outcome, system_error
from tunewire_server.jobs.states import JobState
from tunewire_server.store import SQLiteStore


def test_a_cancel_between_the_workers_exit_and_the_recorded_outcome_is_not_lost(tmp_path):
    async def main():
        settings = Settings(data_dir=tmp_path / "data", metrics_port=-1)
        store = SQLiteStore(settings.db_path)
        manager = JobManager(settings, store)
        store.create_job("job-a", "{}", None, ("state_change", {"state": "QUEUED", "message": "queued"}), "{}")
        job, _ = store.claim_next()  # RUNNING, and no _running names it: the worker has exited
        assert job.state == JobState.RUNNING and manager._running is None

        assert (await manager.cancel("job-a")).state == JobState.CANCELLING
        await manager._conclude("job-a", Outcome(JobState.QUEUED, "retrying", error=system_error("X", "crashed")))
        assert store.get_job("job-a").state == JobState.CANCELLED
        store.close()

    asyncio.run(main())
