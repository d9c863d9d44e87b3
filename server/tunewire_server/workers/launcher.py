"""The seam between the scheduler and training worker processes: a launcher starts a worker, a handle
talks to it. ProcessLauncher starts real children (workers/process.py); scheduler tests use a fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import structlog

from tunewire_server.config import Settings
from tunewire_server.protocol import JobRequest, Message, ProtocolError, decode, encode
from tunewire_server.workers.process import WorkerProcess

log = structlog.get_logger("tunewire.manager")

TRAINING_MODULE = "tunewire_server.worker.training.main"


class WorkerHandle(Protocol):
    """One started training worker: the request goes in with `send`, its messages come out of
    `receive` (one) or `messages` (all, until it closes its pipe); `signal` sends STOP_SIGNAL or
    CHECKPOINT_SIGNAL; `wait` returns its exit code."""

    @property
    def pid(self) -> int: ...

    async def send(self, request: JobRequest) -> None:
        """Send the job request. Raises ConnectionError if the worker is gone."""
        ...

    def messages(self) -> AsyncIterator[Message]:
        """The worker's messages until it closes its pipe (it exited or crashed)."""
        ...

    async def receive(self) -> Message | None:
        """The next message, None once the pipe is closed."""
        ...

    def signal(self, sig: int) -> None:
        """Send `sig` to the worker (and whatever it started), unless it has exited."""
        ...

    def kill(self) -> None:
        """End the worker at once."""
        ...

    async def wait(self) -> int:
        """Wait for the worker's exit; its code (negative: the signal that killed it)."""
        ...

    async def close(self, grace_s: float = 5.0) -> None:
        """End a worker that holds no job: close its input, kill it after `grace_s`."""
        ...


class TrainingLauncher(Protocol):
    """Starts training workers."""

    async def start(self, log_path: Path) -> WorkerHandle:
        """Start a worker that logs to `log_path`; it sends `ready` once it can take a job."""
        ...


class TrainingWorker:
    """A training worker process (WorkerProcess) speaking protocol.py's typed messages."""

    def __init__(self, process: WorkerProcess) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    async def send(self, request: JobRequest) -> None:
        """Send the job request (encoded by protocol.encode)."""
        await self.process.send_line(encode(request))

    async def messages(self) -> AsyncIterator[Message]:
        """Decoded messages until the worker closes its pipe; torn lines and unknown kinds are skipped."""
        while (message := await self.receive()) is not None:
            yield message

    async def receive(self) -> Message | None:
        """The next decoded message, None once the pipe is closed."""
        while (line := await self.process.read_line()) is not None:
            try:
                return decode(line)
            except ProtocolError as exc:  # a torn line from a crash mid-write, or a kind this side does not know
                log.debug("a worker line was skipped", pid=self.pid, reason=str(exc))
        return None

    def signal(self, sig: int) -> None:
        """Send `sig` to the worker's process group."""
        self.process.signal(sig)

    def kill(self) -> None:
        """SIGKILL the worker's process group."""
        self.process.kill()

    async def wait(self) -> int:
        """The worker's exit code, once it exited."""
        return await self.process.wait()

    async def close(self, grace_s: float = 5.0) -> None:
        """End a worker that holds no job."""
        await self.process.close(grace_s)


class ProcessLauncher:
    """Training workers as child processes (`python -m tunewire_server.worker.training.main`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def start(self, log_path: Path) -> TrainingWorker:
        """Start a training worker process with the settings it reads from its environment."""
        env = {"TUNEWIRE_TRAINING_NICENESS": str(self.settings.training_niceness)}
        if self.settings.torch_threads:
            env["TUNEWIRE_TORCH_THREADS"] = str(self.settings.torch_threads)
        return TrainingWorker(await WorkerProcess.start(TRAINING_MODULE, log_path, self.settings.worker_cwd, env))
