"""The demos' server: `tunewire-server` on 127.0.0.1 at a free port with the embedded default (SQLite and a
local data directory), through the same process helper the tests and benchmarks use."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests.support
    sys.path.insert(0, str(ROOT))

from tests.support.server_process import ServerProcess  # noqa: E402


@contextlib.contextmanager
def demo_server(data_dir: Path, log: Path, timeout: float = 30) -> Iterator[ServerProcess]:
    """A SERVING server with its data in `data_dir` and a fresh log at `log`; exits the demo if it does not
    start within `timeout` seconds; stopped (SIGTERM, SIGKILL after 30 s) at the end."""
    log.unlink(missing_ok=True)
    server = ServerProcess(data_dir, console_script=True, threads=None, metrics_port=None, log_path=log)
    print(f"server starting on {server.address} (log: {log})")
    try:
        try:
            server.start(timeout)
        except RuntimeError:
            sys.exit(f"the server did not start; see {log}")
        yield server
    finally:
        server.stop(timeout=30)
        print("server stopped")
