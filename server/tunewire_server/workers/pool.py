"""The warm worker: the next job's training worker, started ahead of time so that its imports (torch,
transformers) are done when the job arrives. At most one waits; it is started through a launcher."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import structlog

from tunewire_server.protocol import Ready
from tunewire_server.workers.launcher import TrainingLauncher, WorkerHandle

log = structlog.get_logger("tunewire.manager")

START_TRIES = 2  # workers started for one job before it fails: one broken warm worker is no reason to fail
IDLE_DEATHS = 3  # warm workers that may die while idle, in a row, before no more are started until a job runs


class WorkerStartFailed(RuntimeError):
    """Training workers exit before they are ready."""


class WarmPool:
    """Hands out training workers that have sent `ready`: the warm one if it is healthy, else a fresh one."""

    def __init__(self, launcher: TrainingLauncher, warm_log: Path, enabled: bool = True) -> None:
        self.launcher = launcher
        self.warm_log = warm_log
        self.enabled = enabled
        self._warm: WorkerHandle | None = None  # started and ready
        self._task: asyncio.Task | None = None  # starting one
        self._watch: asyncio.Task | None = None  # watching the ready one for its death
        self._idle_deaths = 0
        self._closing = False

    def ensure_warm(self) -> None:
        """Start the next job's worker unless one is started or starting (or warming is off or over).
        The caller decides when: a worker importing torch beside a running job would slow it."""
        if not self.enabled or self._closing or self._warm is not None:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._spawn())

    async def wait_ready(self) -> None:
        """Start the warm worker if none is started, and wait until it is ready (or failed to start; or at
        once when warming is off). Cancelling the wait leaves the worker starting."""
        self.ensure_warm()
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task})  # its failure is logged by _spawn, not raised here

    async def _spawn(self) -> None:
        """Start the warm worker now and wait for its `ready`; a failure is logged, and the next job starts its
        own. Once ready it is watched: an idle worker sends nothing, so its pipe closing means it died."""
        try:
            worker = await self.launcher.start(self.warm_log)
        except Exception:
            log.exception("could not start a warm worker")
            return
        try:
            ready = await worker.receive()
        except BaseException:
            worker.kill()
            raise
        if not isinstance(ready, Ready):
            log.warning("a warm training worker exited before it was ready", code=await worker.wait())
            return
        self._warm = worker
        self._watch = asyncio.create_task(self._watch_idle(worker))

    async def _watch_idle(self, worker: WorkerHandle) -> None:
        """Replace the ready warm worker if it dies while it waits (killed, out of memory): without this the
        next job would find it dead and start a worker from scratch, and no worker would be warm meanwhile."""
        await worker.receive()  # returns only when its pipe closes (or on a stray message: treated alike)
        if self._warm is not worker:
            return
        self._warm = None
        worker.kill()
        log.warning("the warm training worker died while idle; starting another", code=await worker.wait())
        self._idle_deaths += 1
        if self._idle_deaths < IDLE_DEATHS:
            self.ensure_warm()

    async def _stop_watching(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None

    async def take(self, log_path: Path) -> WorkerHandle:
        """A worker that has sent `ready`: the warm one, else a fresh one (logging to `log_path`). Raises
        WorkerStartFailed when START_TRIES fresh workers exit first; cancelled, it ends the worker it was
        readying."""
        if self._task is not None:
            await self._task
            self._task = None
        await self._stop_watching()
        worker, self._warm = self._warm, None
        if worker is not None:  # it sent `ready`; should it die before its job, the job's attempt says so
            self._idle_deaths = 0
            return worker
        for _ in range(START_TRIES):
            worker = await self.launcher.start(log_path)
            try:
                ready = await worker.receive()
            except BaseException:  # stopped while the worker was starting: it belongs to no job, end it
                worker.kill()
                raise
            if isinstance(ready, Ready):
                self._idle_deaths = 0
                return worker
            log.warning("a training worker failed to start", code=await worker.wait())
        raise WorkerStartFailed("training workers fail to start; see the worker logs")

    def stop_warming(self) -> None:
        """Start no more warm workers (the server is stopping)."""
        self._closing = True

    async def close(self) -> None:
        """Stop warming and end the warm worker, if any. One still importing is ended, not waited for: on a
        busy machine its imports can take longer than a stop may."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()  # _spawn kills the worker it was readying
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._stop_watching()
        if self._warm is not None:
            await self._warm.close(grace_s=2)
            self._warm = None
