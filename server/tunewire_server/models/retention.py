"""Retention: which checkpoints a succeeded job keeps, when a terminal job's artifacts expire, and applying both.

The decisions are pure functions (plan_retention, expired); apply_retention and sweep carry them out through
models/deletion.py (rename to the trash, then remove), so a download of a checkpoint being pruned either
finishes the file it is reading or ends with NotFound, and never gets a half-removed folder.

Policy. A SUCCEEDED job keeps its final model and its newest `keep_checkpoints` complete checkpoints (the
default keeps one: the final model plus the newest checkpoint); checkpoints that do not verify are never
kept (nothing can resume from them or download them). A FAILED or CANCELLED job keeps its checkpoints: they
are what it got to. With a TTL, every terminal job's artifacts are removed once it ended more than
`artifact_ttl_s` seconds ago (its record, events and metrics stay). With a shared artifact store the policy
is applied to the store's units as well (sweep_shared), so a replica that never ran a job still prunes it there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tunewire_server.checkpoints import step_of
from tunewire_server.jobs.states import JobState
from tunewire_server.models import deletion
from tunewire_server.models.layout import CHECKPOINTS_DIR, JobFolder, Which
from tunewire_server.models.shared import SharedModels
from tunewire_server.store.base import JobRecord


@dataclass(frozen=True)
class CheckpointState:
    step: int
    complete: bool


@dataclass(frozen=True)
class RetentionPlan:
    keep: tuple[int, ...]
    remove: tuple[int, ...]


def plan_retention(state: JobState, checkpoints: Iterable[CheckpointState], keep_checkpoints: int) -> RetentionPlan:
    """Which checkpoint steps a job keeps and which go. Only a SUCCEEDED job's are pruned; a negative
    `keep_checkpoints` keeps them all."""
    items = sorted(checkpoints, key=lambda c: c.step)
    if state != JobState.SUCCEEDED or keep_checkpoints < 0:
        return RetentionPlan(tuple(c.step for c in items), ())
    complete = [c.step for c in items if c.complete]
    kept = set(complete[-keep_checkpoints:] if keep_checkpoints else [])
    return RetentionPlan(tuple(s for s in (c.step for c in items) if s in kept),
                         tuple(c.step for c in items if c.step not in kept))


def expired(job: JobRecord, now: float, artifact_ttl_s: float | None) -> bool:
    """Whether a job's artifacts are past their time to live (never for a job that has not ended, or with no TTL)."""
    if not artifact_ttl_s or artifact_ttl_s <= 0 or not job.terminal or job.ended_at is None:
        return False
    return now - job.ended_at > artifact_ttl_s


def checkpoint_states(folder: JobFolder, is_complete: Callable[[Path], bool]) -> list[CheckpointState]:
    """The checkpoints on disk and whether each one is complete (is_complete: a verification)."""
    if not folder.checkpoints.is_dir():
        return []
    states = []
    for child in folder.checkpoints.iterdir():
        step = step_of(child)
        if step is not None and child.is_dir() and not child.is_symlink():
            states.append(CheckpointState(step, is_complete(child)))
    return states


@dataclass
class RetentionReport:
    removed_checkpoints: dict[str, list[int]] = field(default_factory=dict)  # job id -> steps
    expired_jobs: list[str] = field(default_factory=list)


def apply_retention(job: JobRecord, folder: JobFolder, jobs_dir: Path, is_complete: Callable[[Path], bool],
                    keep_checkpoints: int) -> list[int]:
    """Remove the checkpoints plan_retention lets go (and their merged forms): the steps removed."""
    plan = plan_retention(job.state, checkpoint_states(folder, is_complete), keep_checkpoints)
    for step in plan.remove:
        deletion.remove(folder.checkpoint(step), jobs_dir)
        deletion.remove(folder.merged(Which(step)), jobs_dir)
        folder.merged_log(Which(step)).unlink(missing_ok=True)
    return list(plan.remove)


def sweep(jobs: Iterable[JobRecord], jobs_dir: Path, is_complete: Callable[[Path], bool], keep_checkpoints: int,
          artifact_ttl_s: float | None, now: float,
          on_removed: Callable[[JobRecord, Path], None] | None = None) -> RetentionReport:
    """Apply the TTL and the checkpoint policy to terminal jobs. `on_removed(job, path)` is told of each
    job folder removed (to evict its model from the inference cache). Jobs that are not terminal are skipped."""
    report = RetentionReport()
    for job in jobs:
        if not job.terminal:
            continue
        folder = JobFolder(jobs_dir / job.id)
        if expired(job, now, artifact_ttl_s):
            if deletion.delete_job_artifacts(jobs_dir, job.id):
                report.expired_jobs.append(job.id)
                if on_removed is not None:
                    on_removed(job, folder.path)
            continue
        removed = apply_retention(job, folder, jobs_dir, is_complete, keep_checkpoints)
        if removed:
            report.removed_checkpoints[job.id] = removed
    return report


def sweep_shared(shared: SharedModels, jobs: Iterable[JobRecord], keep_checkpoints: int,
                 artifact_ttl_s: float | None, now: float) -> RetentionReport:
    """The same policy over the shared artifact store's units (one LIST of the store's jobs/ for the whole
    sweep): an expired job's objects are deleted, a SUCCEEDED job's surplus checkpoints (and their merged
    forms) too. A job with more checkpoints than it keeps has its markers read: one not signed with the
    service's key counts as incomplete (never kept), as a local one that does not verify."""
    report = RetentionReport()
    units = shared.units_by_job()
    for job in jobs:
        if not job.terminal or job.id not in units:
            continue
        if expired(job, now, artifact_ttl_s):
            shared.delete_job(job.id)
            report.expired_jobs.append(job.id)
            continue
        states = [CheckpointState(step, True) for rest in units[job.id]
                  if rest.startswith(CHECKPOINTS_DIR + "/") and (step := step_of(Path(rest))) is not None]
        plan = plan_retention(job.state, states, keep_checkpoints)
        if plan.remove:  # only then are the markers read: a unit not signed with the key is never kept
            signed = shared.stored(job.id).checkpoints
            plan = plan_retention(job.state, [CheckpointState(s.step, s.step in signed) for s in states],
                                  keep_checkpoints)
        for step in plan.remove:
            shared.delete_checkpoint(job.id, step)
        if plan.remove:
            report.removed_checkpoints[job.id] = list(plan.remove)
    return report


def merge_reports(a: RetentionReport, b: RetentionReport) -> RetentionReport:
    """One report for what the local sweep and the shared store's sweep removed."""
    removed = {job_id: sorted(set(a.removed_checkpoints.get(job_id, [])) | set(b.removed_checkpoints.get(job_id, [])))
               for job_id in a.removed_checkpoints.keys() | b.removed_checkpoints.keys()}
    return RetentionReport(removed, sorted(set(a.expired_jobs) | set(b.expired_jobs)))
