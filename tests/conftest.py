"""Shared fixtures: offline settings, tiny models, and a real server on 127.0.0.1:0 (in this process or as a
child process). The helpers behind them live in tests/support/."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")  # as tunewire_server/__init__.py: before grpc loads

import pytest  # noqa: E402

from tests.support.postgres import postgres_server  # noqa: F401 - fixture (the session's PostgreSQL)
from tests.support.server_process import ServerProcess
from tests.support.server_thread import ServerThread, make_settings

SERVICE_TESTS = Path(__file__).parent / "service"

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


def pytest_generate_tests(metafunc):
    """The service tests run against both stores: each test with a server, once on SQLite (the default),
    once on PostgreSQL (a fresh schema of the session's server)."""
    if "server_factory" in metafunc.fixturenames and SERVICE_TESTS in Path(str(metafunc.definition.path)).parents:
        metafunc.parametrize("store_kind", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def store_kind(request) -> str:
    """The store the test's servers use: "sqlite" unless the test is parametrized (pytest_generate_tests)."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def server_factory(tmp_path, models_root, store_kind, request):
    started: list[ServerThread] = []
    store = request.getfixturevalue("postgres_server").new_schema() if store_kind == "postgres" else ""

    def start(data_dir: Path | None = None, **overrides) -> ServerThread:
        overrides.setdefault("store", store)
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
