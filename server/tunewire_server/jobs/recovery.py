"""What a server's start does about the work a previous server process left behind."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import structlog

log = structlog.get_logger("tunewire.manager")


def kill_orphan(job_dir: Path) -> None:
    """A worker of a server that died (kill -9) may still run: stop it before the job is resumed."""
    pid_file = job_dir / "worker.pid"
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"tunewire_server.worker" in cmdline:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        log.warning("killed an orphaned worker", pid=pid)
    pid_file.unlink(missing_ok=True)
