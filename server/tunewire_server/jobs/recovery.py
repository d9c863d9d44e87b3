"""Jobs whose server is gone: what a start does about those a previous process left, and how a replica
takes over a job whose lease expired (its replica died)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import structlog

from tunewire_server.jobs.outcome import job_retry_limit
from tunewire_server.jobs.states import IllegalTransition, JobState
from tunewire_server.jobs.transitions import Transitions
from tunewire_server.layout import WORKER_PID
from tunewire_server.protocol import JobError
from tunewire_server.store import JobRecord, Lease, LeaseLost

log = structlog.get_logger("tunewire.manager")

RESTART_ALLOWANCE = 2  # server restarts a job may live through, on top of its retries


def kill_orphan(job_dir: Path) -> None:
    """A worker of a server that died (kill -9) may still run: stop it before the job is resumed. Only an
    orphan: a worker whose parent is a live server (another replica's, on this machine) is not touched."""
    pid_file = job_dir / WORKER_PID
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        parent = Path(f"/proc/{ppid}/cmdline").read_bytes() if ppid > 1 else b""
    except (OSError, ValueError, IndexError):
        pid_file.unlink(missing_ok=True)
        return
    if b"tunewire_server.worker" in cmdline and b"tunewire_server" not in parent:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        log.warning("killed an orphaned worker", pid=pid)
    pid_file.unlink(missing_ok=True)


async def take_over(transitions: Transitions, job: JobRecord, fence: Lease, jobs_dir: Path,
                    max_job_retries: int) -> None:
    """Resolve one job whose server died or stopped renewing its lease (`fence`: that lease, expired): a
    CANCELLING job ends CANCELLED; a PAUSING one is PAUSED (ResumeJob continues it from its newest complete
    checkpoint); a RUNNING one is queued again, at its old place in the queue, to resume from its last
    complete checkpoint, unless its attempts (those ended by a pause not counted) passed 1 + its retries +
    RESTART_ALLOWANCE (then it FAILED with SERVER_RESTARTED). Every write is fenced: LeaseLost if another
    replica was first."""
    transitions.hub.open(job.id)
    kill_orphan(jobs_dir / job.id)
    if job.state == JobState.CANCELLING:
        await transitions.finish(job.id, JobState.CANCELLED, message="cancelled while the server was down",
                                 fence=fence)
    elif job.state == JobState.PAUSING:
        await transitions.set_state(job.id, JobState.PAUSED, fence=fence, extra={"pauses": job.pauses + 1},
                                    message="paused (its server stopped as it paused); it resumes from its "
                                            "newest complete checkpoint")
    elif job.attempts - job.pauses > 1 + job_retry_limit(job.spec_json, max_job_retries) + RESTART_ALLOWANCE:
        await transitions.finish(job.id, JobState.FAILED, fence=fence, error=JobError.system(
            "SERVER_RESTARTED", f"the server stopped while the job ran, {job.attempts} times; giving up"))
    else:
        await transitions.set_state(job.id, JobState.QUEUED, fence=fence,
                                    message="the server restarted; resuming from the last complete checkpoint")


async def recover(transitions: Transitions, jobs_dir: Path, max_job_retries: int) -> list[str]:
    """Take over every job whose lease expired (take_over): at a start, those a previous server process
    left RUNNING, CANCELLING or PAUSING; with a shared store, also those of a replica that died. Returns the ids of
    the jobs taken over; one another replica took first is skipped."""
    store = transitions.store
    taken = []
    for job in store.expired_leases():
        lease = store.lease(job.id)
        if lease is None or not lease.expired or lease.attempt != job.attempts:
            continue  # renewed, ended or claimed again since it was listed
        fence = Lease(lease.owner, lease.attempt, expired=True)
        try:
            await take_over(transitions, job, fence, jobs_dir, max_job_retries)
        except (LeaseLost, IllegalTransition):
            log.info("another replica took the job over first", job_id=job.id)
            continue
        log.warning("took over a job whose lease expired", job_id=job.id, owner=lease.owner, attempt=lease.attempt,
                    state=job.state.value)
        taken.append(job.id)
    return taken
