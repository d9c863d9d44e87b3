"""When retention runs: for one job right after it SUCCEEDS (its surplus checkpoints go), and periodically over
every terminal job while a time-to-live is set (expired jobs' artifacts go, and their models leave the
inference cache). Sweeps run one at a time, each in a thread; a failed sweep is logged and the next one runs.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from tunewire_server.jobs.states import TERMINAL, JobState
from tunewire_server.models.retention import RetentionReport
from tunewire_server.models.service import ModelService
from tunewire_server.store.base import Store

log = structlog.get_logger("tunewire.models")


class RetentionSweeper:
    """Applies the retention settings (keep_checkpoints, artifact_ttl_s, retention_interval_s) through a
    ModelService. `start()` begins the periodic sweep when artifact_ttl_s is above 0; `stop()` ends it."""

    def __init__(self, models: ModelService, store: Store, *, keep_checkpoints: int, artifact_ttl_s: float,
                 interval_s: float) -> None:
        self.models = models
        self.store = store
        self.keep_checkpoints = keep_checkpoints
        self.artifact_ttl_s = artifact_ttl_s
        self.interval_s = interval_s
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._after: set[asyncio.Task] = set()

    def job_succeeded(self, job_id: str) -> None:
        """The scheduler's hook, called on the event loop once a job's SUCCEEDED state is stored: prunes it
        in a task of its own (after_success), so the next job is not held up."""
        task = asyncio.create_task(self.after_success(job_id), name="tunewire-retention")
        self._after.add(task)
        task.add_done_callback(self._after.discard)

    async def after_success(self, job_id: str) -> RetentionReport | None:
        """Prune a job that just SUCCEEDED down to its final model and newest `keep_checkpoints` checkpoints.
        Never raises: retention failing must not touch the job's outcome."""
        try:
            job = self.store.get_job(job_id)
            if job is None or job.state != JobState.SUCCEEDED:
                return None
            async with self._lock:
                report = await asyncio.to_thread(self.models.sweep, [job], self.keep_checkpoints, None)
            if report.removed_checkpoints:
                log.info("checkpoints pruned", job_id=job_id, steps=report.removed_checkpoints.get(job_id))
            return report
        except Exception:
            log.exception("retention after success failed", job_id=job_id)
            return None

    async def sweep(self) -> RetentionReport:
        """One sweep over every terminal job: the TTL and the checkpoint policy; expired jobs' models are
        evicted from the inference cache."""
        async with self._lock:
            jobs = await asyncio.to_thread(self.store.jobs_in_states, TERMINAL)
            report = await asyncio.to_thread(self.models.sweep, jobs, self.keep_checkpoints,
                                             self.artifact_ttl_s or None)
            await self.models.evict_many(report.expired_jobs)
        if report.expired_jobs or report.removed_checkpoints:
            log.info("retention sweep", expired_jobs=report.expired_jobs,
                     pruned_jobs=sorted(report.removed_checkpoints))
        return report

    async def _every_interval(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # the loop outlives any one failure
                log.exception("retention sweep failed")
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        if self.artifact_ttl_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._every_interval())

    async def stop(self) -> None:
        """End the periodic sweep and wait for the prunes under way (each a few renames)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._after:
            await asyncio.wait(list(self._after))
