"""`tunewire-server` as a real child process on 127.0.0.1: for tests that kill or signal the server itself,
the benchmarks (which measure it from outside) and the demo scripts."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.ports import free_port
from tests.support.procs import INFERENCE_WORKER, TRAINING_WORKER, cmdline, cpu_ticks, worker_children
from tests.support.waiting import wait_serving

_LIVE: set[ServerProcess] = set()


@atexit.register
def _stop_all() -> None:
    """Servers still running when the interpreter exits (an exception, SIGTERM turned into SystemExit)."""
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()


class ServerProcess:
    """`python -m tunewire_server` (or the `tunewire-server` script) on a free port, logging to a file.

    `threads` and `metrics_port` become --torch-threads and --metrics-port; None leaves the server's own
    default. `env` is added to this process's environment. Nothing runs until `start()`."""

    def __init__(self, data_dir: Path, model_root: Path | None = None, *args: str, threads: int | None = 1,
                 metrics_port: int | None = 0, env: dict | None = None, console_script: bool = False,
                 log_path: Path | None = None) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log_path = log_path or data_dir / "server.log"
        exe = ([str(Path(sys.executable).parent / "tunewire-server")] if console_script
               else [sys.executable, "-m", "tunewire_server"])
        self.cmd = [*exe, "--port", str(self.port), "--data-dir", str(data_dir)]
        if model_root is not None:
            self.cmd += ["--model-root", str(model_root)]
        if threads is not None:
            self.cmd += ["--torch-threads", str(threads)]
        if metrics_port is not None:
            self.cmd += ["--metrics-port", str(metrics_port)]
        if not any(a.startswith("--http-port") for a in args):  # the OpenAI face only where a test asks for it (its default port is fixed)
            self.cmd += ["--http-port", "-1"]
        self.cmd += args
        self._env = {**os.environ, **(env or {})}
        self._log = None
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.serving_at = 0.0

    def start(self, timeout: float = 120) -> ServerProcess:
        """Start the server and wait until its health service answers SERVING; on failure stop it and raise
        RuntimeError with the end of its log."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115  (the server writes to it until it stops)
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self._env)
        _LIVE.add(self)
        try:
            self.serving_at = wait_serving(self.address, timeout, alive=lambda: self.proc.poll() is None)
        except BaseException as exc:
            self.stop()
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: pass on as they are
                raise
            raise RuntimeError(f"server did not start:\n{self.log_tail()}") from None
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def signal(self, sig) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
        _LIVE.discard(self)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def training_workers(self) -> list[int]:
        return worker_children(self.pid, TRAINING_WORKER)

    def inference_workers(self) -> list[int]:
        return worker_children(self.pid, INFERENCE_WORKER)

    def wait_warm_worker(self, timeout: float = 180) -> float:
        """Wait until the server's idle warm training worker has finished its imports.

        Seen from outside: the one training worker child that runs no job (no jobs/*/worker.pid names
        it) and whose CPU time stopped growing (it blocks reading its job from stdin after `ready`).
        Returns the seconds waited."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        stable_since: float | None = None
        last: tuple[int, int] | None = None
        busy: set[int] = set()
        while time.monotonic() < deadline:
            busy = set()  # workers running a job: the job's folder holds their pid
            for pid_file in (self.data_dir / "jobs").glob("*/worker.pid"):
                with contextlib.suppress(OSError, ValueError):
                    busy.add(int(pid_file.read_text()))
            workers = [pid for pid in self.training_workers() if pid not in busy]
            if len(workers) == 1:
                pid = workers[0]
                cpu = cpu_ticks(pid)
                if cpu is not None and last == (pid, cpu):
                    stable_since = stable_since or time.monotonic()
                    if time.monotonic() - stable_since >= 0.5:
                        return time.monotonic() - t0
                else:
                    stable_since = None
                last = (pid, cpu) if cpu is not None else None
            else:
                stable_since, last = None, None
            time.sleep(0.1)
        workers = {pid: (cpu_ticks(pid), cmdline(pid)[:80]) for pid in self.training_workers()}
        raise TimeoutError(f"no idle warm training worker appeared: training workers {workers}, "
                           f"running jobs' workers {sorted(busy)}; server log: {self.log_tail()}")
