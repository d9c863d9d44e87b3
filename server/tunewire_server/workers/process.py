"""Start worker child processes and talk to them over pipes (asyncio side; no torch here).

Workers are fresh interpreters (`python -m ...`), never forks of the control plane, each in its own
process group so that everything a worker started can be stopped together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from tunewire_server.protocol import CHECKPOINT_SIGNAL, STOP_SIGNAL

__all__ = ["CHECKPOINT_SIGNAL", "STOP_SIGNAL", "WorkerProcess", "describe_exit", "worker_environment"]

# The TUNEWIRE_* variables worker code reads (worker/runtime.py, training.py, inference.py, launcher.py).
# Every other TUNEWIRE_* variable of the server's environment is a server setting (auth tokens, the TLS
# key's path, ...) and stays out of workers: they run third-party model and data code.
WORKER_SETTINGS = frozenset({
    "TUNEWIRE_TORCH_THREADS", "TUNEWIRE_TRAINING_NICENESS", "TUNEWIRE_CACHE_SIZE", "TUNEWIRE_BATCH_WINDOW_MS",
    "TUNEWIRE_MAX_BATCH", "TUNEWIRE_LAUNCHER_PARENT",
})
SETTINGS_PREFIX = "TUNEWIRE_"



def worker_environment(extra: dict[str, str] | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """A worker's environment: the server's, less its settings (only the ones in WORKER_SETTINGS pass),
    plus `extra` (what the caller passes the worker on purpose). Other variables pass: the worker needs
    PATH, CUDA_*, HF_* (HF_TOKEN for gated hub models) and the like, which the server does not know."""
    base = os.environ if base is None else base
    env = {k: v for k, v in base.items() if not k.startswith(SETTINGS_PREFIX) or k in WORKER_SETTINGS}
    env.update(extra or {})
    return env


class WorkerProcess:
    """One worker child: a JSON request in on stdin, JSON-line messages out on a dedicated pipe."""

    def __init__(self, proc: asyncio.subprocess.Process, reader: asyncio.StreamReader, transport) -> None:
        self.proc = proc
        self._reader = reader
        self._transport = transport

    @classmethod
    async def start(cls, module: str, log_path: Path, cwd: Path, env: dict[str, str] | None = None) -> WorkerProcess:
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cwd.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", module, "--message-fd", str(write_fd),
                    stdin=asyncio.subprocess.PIPE, stdout=log, stderr=log,
                    pass_fds=(write_fd,), env=worker_environment(env), cwd=cwd, start_new_session=True,
                )
            finally:
                os.close(write_fd)
        reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        return cls(proc, reader, transport)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def send(self, message: dict) -> None:
        """Send one untyped message (the inference and merge protocols)."""
        await self.send_line(json.dumps(message))

    async def send_line(self, line: str) -> None:
        """Send one message already encoded as a line (without its newline)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def read_line(self) -> bytes | None:
        """The worker's next line, None once it closed its pipe (it exited or crashed)."""
        line = await self._reader.readline()
        return line or None

    async def messages(self) -> AsyncIterator[dict]:
        """Untyped messages until the worker closes its pipe (it exited or crashed)."""
        while (message := await self.receive()) is not None:
            yield message

    async def receive(self) -> dict | None:
        """The next untyped message, None once the pipe is closed; torn lines are skipped."""
        while (line := await self.read_line()) is not None:
            try:
                return json.loads(line)
            except ValueError:
                continue  # a torn line from a crash mid-write
        return None

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    async def wait(self) -> int:
        code = await self.proc.wait()
        self._transport.close()
        return code

    async def close(self, grace_s: float = 5.0) -> None:
        if self.proc.returncode is None:
            if self.proc.stdin is not None and not self.proc.stdin.is_closing():
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), grace_s)
            except TimeoutError:
                self.kill()
        await self.wait()


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the training worker was killed by {name}"
    return f"the training worker exited with code {code} without a result"
