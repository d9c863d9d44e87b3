"""A real PostgreSQL server for a test session: initdb + pg_ctl in a temporary folder, on 127.0.0.1.

initdb and pg_ctl refuse to run as root: as root they run as the `postgres` user (`runuser -u postgres`),
otherwise as the current user. The server listens on 127.0.0.1 on a free port, its unix socket lives in
its own folder, and `stop()` (pg_ctl stop -m immediate) removes everything. Each test gets a fresh
schema (`new_schema`; `new_database` where a test needs a whole database), so tests never see each
other's rows. Durability settings are off: the tests never crash the machine, and with fsync off the
server starts faster.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port

SUPERUSER = "postgres"


def find_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl: Debian's /usr/lib/postgresql/<newest>/bin, else PATH's."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                        if Path(p).parent.name.isdigit() else 0, reverse=True)
    for folder in candidates:
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(initdb).resolve().parent
    return None


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", SUPERUSER, "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class PostgresServer:
    """One PostgreSQL server in a temporary folder; `start()` returns once it accepts connections."""

    bin_dir: Path
    root: Path | None = None
    port: int = 0
    start_seconds: float = 0.0  # initdb + pg_ctl start, for the report
    _shared_database: str = ""

    def start(self) -> PostgresServer:
        began = time.monotonic()
        self.root = Path(tempfile.mkdtemp(prefix="tunewire-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, SUPERUSER)
        data, log = self.root / "data", self.root / "server.log"
        self._run([str(self.bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
                   "--encoding=UTF8", "--locale=C", "--no-sync"])
        self.port = free_port()
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root}"
                   " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run([str(self.bin_dir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(data), "-l", str(log),
                   "-o", options])
        self.start_seconds = time.monotonic() - began
        return self

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(_as_server_user(argv), capture_output=True, text=True, cwd=self.root, timeout=120)
        if done.returncode != 0:
            log = self.root / "server.log" if self.root else None
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr[-2000:]}\n{tail}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL (about 0.1-0.2 s: a copy of template0)."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def new_schema(self) -> str:
        """A fresh, empty schema in the shared database `tests`, as a URL whose connections use only it
        (search_path): what tables and rows a test sees are its own, and it costs a millisecond."""
        import psycopg

        if not self._shared_database:
            self._shared_database = self.new_database()
        name = "s_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self._shared_database, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return f"{self._shared_database}?options=-c%20search_path%3D{name}"

    def restart(self, mode: str = "fast") -> float:
        """`pg_ctl restart` (same port, options and data): every session is ended, as in a failover or an
        upgrade of the database. Returns the seconds until the server accepts connections again."""
        assert self.root is not None, "not started"
        began = time.monotonic()
        self._run([str(self.bin_dir / "pg_ctl"), "restart", "-m", mode, "-w", "-t", "60",
                   "-D", str(self.root / "data"), "-l", str(self.root / "server.log")])
        return time.monotonic() - began

    def stop(self) -> None:
        """Stop the server at once and remove its folder (nothing to keep: a test server)."""
        if self.root is None:
            return
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_server_user([str(self.bin_dir / "pg_ctl"), "stop", "-m", "immediate", "-w",
                                            "-D", str(data)]), capture_output=True, cwd=self.root, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None


# --- pytest fixtures (a conftest imports them) ---------------------------------------------------

try:
    import pytest
except ImportError:  # tests/support is shared with bench/ and scripts/, which may run without pytest
    pytest = None

if pytest is not None:
    @pytest.fixture(scope="session")
    def postgres_server():
        """One PostgreSQL server for the test session, stopped at its end (even if tests failed).
        Skips only where no PostgreSQL server binaries are installed."""
        bin_dir = find_bin_dir()
        if bin_dir is None:
            pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin or on PATH;"
                        " `make install` installs Debian's postgresql")
        server = PostgresServer(bin_dir)
        try:
            yield server.start()
        finally:
            server.stop()

    @pytest.fixture
    def postgres_url(postgres_server) -> str:
        """The URL of a fresh, empty schema for this test (PostgresServer.new_schema)."""
        return postgres_server.new_schema()
