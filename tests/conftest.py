"""Shared fixtures: offline settings, tiny models, and a real server on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

# Everything offline, one torch thread: fast and deterministic on a 2-core machine.
os.environ.update({
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TUNEWIRE_TORCH_THREADS": "1",
    "OMP_NUM_THREADS": "1",
})


@pytest.fixture(scope="session")
def models_root(tmp_path_factory) -> Path:
    from tests import tiny

    root = tmp_path_factory.mktemp("models")
    tiny.build_tiny_bert(root / "tiny-bert")
    return root


class ServerThread:
    """A TunewireServer on its own event loop in a background thread."""

    def __init__(self, settings) -> None:
        from tunewire_server.api.server import TunewireServer

        self.settings = settings
        self.server = TunewireServer(settings)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server_stopped = False

    def start(self) -> ServerThread:
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        self.address = f"127.0.0.1:{port}"
        return self

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop_server(self) -> None:
        """Stop the server but keep its loop thread: worker children die with the thread that started
        them (PR_SET_PDEATHSIG), so this shows what the server itself ended."""
        if not self._server_stopped:
            self._server_stopped = True
            self.run(self.server.stop(grace=1), timeout=60)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self.stop_server()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def make_settings(data_dir: Path, models_root: Path, **overrides):
    from tunewire_server.config import Settings

    overrides.setdefault("metrics_port", 0)
    return Settings(host="127.0.0.1", port=0, data_dir=data_dir, model_root=models_root, torch_threads=1,
                    **overrides)


@pytest.fixture
def server_factory(tmp_path, models_root):
    started: list[ServerThread] = []

    def start(data_dir: Path | None = None, **overrides) -> ServerThread:
        settings = make_settings(data_dir or tmp_path / "data", models_root, **overrides)
        st = ServerThread(settings).start()
        started.append(st)
        return st

    yield start
    for st in started:
        st.stop()


@pytest.fixture
def server(server_factory) -> ServerThread:
    return server_factory()


@pytest.fixture
def client(server):
    import tunewire

    with tunewire.Client(server.address, timeout=30) as c:
        yield c


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05):
    """Poll until `predicate()` is truthy; return its value or fail the test."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def training_workers(data_dir: Path) -> list[int]:
    """Live training workers started by this test process's in-process server at `data_dir`: children of
    this process whose log (stdout) lies under that data directory."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (entry / "cmdline").read_bytes()
            log = os.readlink(entry / "fd" / "1")
        except (OSError, ValueError, IndexError):
            continue
        state, ppid = fields[0], int(fields[1])
        if (ppid == me and state != "Z" and b"tunewire_server.worker.training" in cmd
                and Path(log).is_relative_to(data_dir)):
            found.append(int(entry.name))
    return sorted(found)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`tunewire-server` as a real child process, for tests that kill or signal the server itself."""

    def __init__(self, data_dir: Path, models_root: Path, *args: str, env: dict | None = None) -> None:
        import subprocess
        import sys

        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "server.log"
        cmd = [sys.executable, "-m", "tunewire_server", "--port", str(self.port), "--data-dir", str(data_dir),
               "--model-root", str(models_root), "--torch-threads", "1", "--metrics-port", "0", *args]
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    def wait_serving(self, timeout: float = 30) -> ServerProcess:
        import time

        import tunewire

        deadline = time.monotonic() + timeout
        with tunewire.Client(self.address) as c:
            while not c.health(timeout=1):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start:\n{self.log_path.read_text()[-3000:]}")
                time.sleep(0.1)
        return self

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def process_factory(tmp_path, models_root):
    started: list[ServerProcess] = []

    def start(data_dir: Path | None = None, *args: str, env: dict | None = None) -> ServerProcess:
        sp = ServerProcess(data_dir or tmp_path / "data", models_root, *args, env=env).wait_serving()
        started.append(sp)
        return sp

    yield start
    for sp in started:
        sp.stop()
