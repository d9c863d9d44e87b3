"""What a server's start does about the work a previous server process left behind."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import structlog

from tunewire_server.jobs.outcome import job_retry_limit
from tunewire_server.jobs.states import JobState
from tunewire_server.jobs.transitions import Transitions
from tunewire_server.layout import WORKER_PID
from tunewire_server.protocol import JobError

log = structlog.get_logger("tunewire.manager")

RESTART_ALLOWANCE = 2  # server restarts a job may live through, on top of its retries


def kill_orphan(job_dir: Path) -> None:
    """A worker of a server that died (kill -9) may still run: stop it before the job is resumed."""
    pid_file = job_dir / WORKER_PID
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


async def recover(transitions: Transitions, jobs_dir: Path, max_job_retries: int) -> None:
    """Resolve the jobs a previous server process left RUNNING or CANCELLING: a CANCELLING job ends
    CANCELLED; a RUNNING one is queued again to resume from its last checkpoint, unless its attempts
    passed 1 + its retries + RESTART_ALLOWANCE (then it FAILED with SERVER_RESTARTED)."""
    store, hub = transitions.store, transitions.hub
    for job in store.jobs_in_states([JobState.RUNNING, JobState.CANCELLING]):
        hub.open(job.id)
        kill_orphan(jobs_dir / job.id)
        if job.state == JobState.CANCELLING:
            await transitions.finish(job.id, JobState.CANCELLED, message="cancelled while the server was down")
        elif job.attempts > 1 + job_retry_limit(job.spec_json, max_job_retries) + RESTART_ALLOWANCE:
            await transitions.finish(job.id, JobState.FAILED, error=JobError.system(
                "SERVER_RESTARTED", f"the server stopped while the job ran, {job.attempts} times; giving up"))
        else:
            await transitions.set_state(job.id, JobState.QUEUED,
                                        message="the server restarted; resuming from the last complete checkpoint")
