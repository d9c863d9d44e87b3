"""A job's state changes: each checked against states.TRANSITIONS, stored with its event, then published.

One lock orders them: a check reads the job, the write awaits a thread, and no other change of this
process may fall in between (a cancel racing the end of a run, a claim racing a cancel). Changes made by
other replicas (a shared store) cannot be ordered by it: each write applies only if the job is still in
the state the check read (`expect_state`; else IllegalTransition, as a change of this process would
have given), and a running job's writes carry its lease (`fence`; else LeaseLost).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import structlog

from tunewire_server.errors import ResourceExhausted
from tunewire_server.jobs.events import EventHub
from tunewire_server.jobs.states import TERMINAL, IllegalTransition, JobState, check_transition
from tunewire_server.observability import Metrics
from tunewire_server.protocol import JobError
from tunewire_server.store import DiskFull, Event, JobRecord, Lease, StateChanged, Store, is_disk_full

log = structlog.get_logger("tunewire.manager")


def new_job_id() -> str:
    return "job-" + uuid.uuid4().hex[:16]


class Transitions:
    """The only writer of job states (the store's claim_next aside, which this calls under the lock)."""

    def __init__(self, store: Store, hub: EventHub, metrics: Metrics) -> None:
        self.store = store
        self.hub = hub
        self.metrics = metrics
        self._lock = asyncio.Lock()

    async def create(self, jobs_dir: Path, spec_json: str, request_id: str | None, plan: dict) -> JobRecord:
        """Store a new QUEUED job (its folder under `jobs_dir`, its first event) and open its event stream.
        A full disk raises ResourceExhausted, and leaves nothing behind."""
        job_id = new_job_id()
        job_dir = jobs_dir / job_id
        try:
            job_dir.mkdir(parents=True)
            job = await self.store.write(
                self.store.create_job, job_id, spec_json, request_id,
                ("state_change", {"state": JobState.QUEUED.value, "message": "queued"}), json.dumps(plan))
        except Exception as exc:
            shutil.rmtree(job_dir, ignore_errors=True)  # nothing is left behind, whatever failed
            if not isinstance(exc, DiskFull) and not is_disk_full(exc):
                raise
            raise ResourceExhausted("the server's data disk is full; new jobs are refused until space "
                                    "is freed") from None
        self.hub.open(job_id)
        return job

    async def claim(self, on_claimed: Callable[[JobRecord], None], owner: str, lease_s: float) -> JobRecord | None:
        """Take the next queued job (Store.claim_next: RUNNING now, its lease held by `owner` for lease_s
        seconds), call `on_claimed(job)` before any other state change can look at it, and publish its
        event. None when nothing is queued; raises DiskFull when the store cannot write."""
        async with self._lock:
            claimed = await self.store.write(self.store.claim_next, owner=owner, lease_s=lease_s)
            if claimed is None:
                return None
            job, event = claimed
            on_claimed(job)
            await self.hub.publish(event)
        return job

    async def set_state(self, job_id: str, state: JobState, *, message: str = "", error: JobError | None = None,
                        extra: dict | None = None, fence: Lease | None = None, details: dict | None = None) -> Event:
        """Move the job to `state` (IllegalTransition if it may not, or if another replica moved it on
        meanwhile), storing a state_change event with `message` and `error` (and the keys of `details`,
        e.g. the step a job paused at), and the job fields `extra`, in one write (fenced by `fence`:
        LeaseLost); then publish the event. The store keeps the error as a dict (JobError.to_dict), in the
        event and as the job's error."""
        async with self._lock:
            current = self.store.get_job(job_id)
            if current is None:
                raise IllegalTransition(f"job {job_id} is gone")
            check_transition(current.state, state)
            payload: dict = {**(details or {}), "state": state.value, "message": message}
            fields = {"state": state, **(extra or {})}
            if error is not None:
                payload["error"] = fields["error"] = error.to_dict()
            try:
                event = await self.store.write(self.store.append_event, job_id, "state_change", payload, fields,
                                               fence=fence, expect_state=current.state)
            except StateChanged as exc:
                raise IllegalTransition(str(exc)) from None
            await self.hub.publish(event)
        return event

    async def finish(self, job_id: str, state: JobState, *, message: str = "", error: JobError | None = None,
                     metrics: dict | None = None, fence: Lease | None = None) -> None:
        """End the job in terminal `state`: set ended_at (and progress 1 and metrics on success), clear an
        earlier attempt's error unless it FAILED, close its event streams and count it."""
        assert state in TERMINAL
        extra: dict = {"ended_at": time.time()}
        if state != JobState.FAILED:
            extra["error"] = None  # an error from an earlier, retried attempt no longer applies
        if state == JobState.SUCCEEDED:
            extra["progress"] = 1.0
        if metrics:
            extra["metrics"] = metrics
        await self.set_state(job_id, state, message=message or (error.message if error else ""),
                             error=error, extra=extra, fence=fence)
        await self.hub.close(job_id)
        job = self.store.get_job(job_id)
        self.metrics.job_ended(state, job.started_at if job else None, extra["ended_at"])
        log.info("job finished", job_id=job_id, state=state.value, error=error.code if error else None)
