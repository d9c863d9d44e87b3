"""Shared fixtures: offline settings, tiny models, and a real server on 127.0.0.1:0 (in this process or as a
child process). The helpers behind them live in tests/support/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.server_process import ServerProcess
from tests.support.server_thread import ServerThread, make_settings

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


@pytest.fixture
def process_factory(tmp_path, models_root):
    started: list[ServerProcess] = []

    def start(data_dir: Path | None = None, *args: str, env: dict | None = None) -> ServerProcess:
        sp = ServerProcess(data_dir or tmp_path / "data", models_root, *args, env=env).start(30)
        started.append(sp)
        return sp

    yield start
    for sp in started:
        sp.stop()
