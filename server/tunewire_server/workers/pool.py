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


class WorkerStartFailed(RuntimeError):
    """Training workers exit before they are ready."""


class WarmPool:
    """Hands out training workers that have sent `ready`: the warm one if it is healthy, else a fresh one."""

    def __init__(self, launcher: TrainingLauncher, warm_log: Path, enabled: bool = True) -> None:
        self.launcher = launcher
        self.warm_log = warm_log
        self.enabled = enabled
        self._warm: WorkerHandle | None = None
        self._task: asyncio.Task | None = None
        self._closing = False

    def ensure_warm(self) -> None:
        """Start the next job's worker unless one is started or starting (or warming is off or over).
        The caller decides when: a worker importing torch beside a running job would slow it."""
        if not self.enabled or self._closing or self._warm is not None:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._spawn())

    async def _spawn(self) -> None:
        """Start the warm worker now; a failure is logged, and the next job starts its own."""
        try:
            self._warm = await self.launcher.start(self.warm_log)
        except Exception:
            log.exception("could not start a warm worker")

    async def take(self, log_path: Path) -> WorkerHandle:
        """A worker that has sent `ready` (a fresh one logs to `log_path`). Raises WorkerStartFailed
        when START_TRIES workers exit first; cancelled, it ends the worker it was readying."""
        if self._task is not None:
            await self._task
            self._task = None
        worker, self._warm = self._warm, None
        try:
            for _ in range(START_TRIES):
                if worker is None:
                    worker = await self.launcher.start(log_path)
                ready = await worker.receive()  # a warm worker sent it long ago
                if isinstance(ready, Ready):
                    return worker
                log.warning("a training worker failed to start", code=await worker.wait())
                worker = None
            raise WorkerStartFailed("training workers fail to start; see the worker logs")
        except BaseException:  # stopped while the worker was starting: it belongs to no job, end it
            if worker is not None:
                worker.kill()
            raise

    def stop_warming(self) -> None:
        """Start no more warm workers (the server is stopping)."""
        self._closing = True

    async def close(self) -> None:
        """Stop warming and end the warm worker, if any."""
        self._closing = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._warm is not None:
            await self._warm.close(grace_s=2)
            self._warm = None
