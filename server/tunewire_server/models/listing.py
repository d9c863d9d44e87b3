"""ListCheckpoints: a job's complete checkpoints (and its final model) with what is known about each.

Each checkpoint: its step, epoch and time, its size on disk and the size of what a download of it sends,
and the eval metrics logged at its step. The step and the files come from the folder (only checkpoints
whose marker verifies are listed: the check resume uses); the epoch from the checkpoint's trainer_state.json,
else from an event at that step; the time from its checkpoint_saved event (the last one, where a retried
attempt saved the same step again), else the marker's mtime; the metrics from the eval_result event logged
at that step. Blocking (it reads files and may hash them): call it from a thread.

With a shared artifact store, list_stored lists what the store holds instead (models/shared.py): the
same answer from every replica, whether or not it ran the job or holds a copy. The sizes and the step come
from each unit's signed marker, the epoch and time from the job's events (the store keeps no mtime here).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from tunewire_server.artifacts import UnitManifest
from tunewire_server.checkpoints import MARKER, step_of
from tunewire_server.jobs.states import JobState
from tunewire_server.models.layout import EMBEDDED_MERGED, JobFolder, Which, read_meta
from tunewire_server.models.selection import is_adapter, is_sent
from tunewire_server.models.shared import StoredJob
from tunewire_server.models.verified import VerifiedFolder, VerifyCache
from tunewire_server.store.base import JobRecord, Store

EVENT_PAGE = 1000


@dataclass(frozen=True)
class CheckpointInfo:
    step: int
    epoch: float | None
    time: float  # unix seconds
    size_bytes: int  # every file of the checkpoint on disk (optimizer state included)
    download_bytes: int  # what a download of it (as trained) sends
    metrics: dict[str, float] = field(default_factory=dict)  # eval metrics logged at this step
    adapter: bool = False  # a LoRA adapter: the merged form can be asked for


@dataclass(frozen=True)
class FinalModelInfo:
    step: int | None
    time: float
    size_bytes: int
    download_bytes: int
    metrics: dict[str, float]  # the job's final metrics (its last evaluation)
    adapter: bool
    merged_ready: bool  # the merged form is on disk already (no merge on the first download)


@dataclass(frozen=True)
class CheckpointListing:
    job_id: str
    checkpoints: list[CheckpointInfo]  # oldest first
    final: FinalModelInfo | None  # None unless the job SUCCEEDED and its model verifies


@dataclass
class _StepFacts:
    time: float | None = None
    epoch: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def _facts_by_step(store: Store, job_id: str) -> dict[int, _StepFacts]:
    """What the job's events say about each step: checkpoint_saved times, eval_result metrics and epochs."""
    facts: dict[int, _StepFacts] = {}
    after = 0
    while True:
        page = store.events_after(job_id, after, EVENT_PAGE)
        for event in page:
            step = event.payload.get("step")
            if not isinstance(step, int) or event.kind not in ("checkpoint_saved", "eval_result", "train_log"):
                continue
            f = facts.setdefault(step, _StepFacts())
            epoch = event.payload.get("epoch")
            if isinstance(epoch, (int, float)) and f.epoch is None:
                f.epoch = float(epoch)
            if event.kind == "checkpoint_saved":
                f.time = event.time
            elif event.kind == "eval_result":
                metrics = event.payload.get("metrics") or {}
                f.metrics = {k: float(v) for k, v in metrics.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if len(page) < EVENT_PAGE:
            return facts
        after = page[-1].seq


def _epoch_of(folder: VerifiedFolder) -> float | None:
    if "trainer_state.json" not in folder.files:
        return None
    try:
        epoch = json.loads((folder.path / "trainer_state.json").read_text()).get("epoch")
    except (OSError, ValueError, AttributeError):
        return None
    return float(epoch) if isinstance(epoch, (int, float)) else None


def _mtime(folder: VerifiedFolder) -> float:
    try:
        return os.stat(folder.path / MARKER).st_mtime
    except OSError:
        return 0.0


def _download_bytes(folder: VerifiedFolder) -> int:
    return sum(f.size for name, f in folder.files.items() if is_sent(name))


def list_checkpoints(job: JobRecord, folder: JobFolder, store: Store, cache: VerifyCache) -> CheckpointListing:
    """Every complete checkpoint of `job` (oldest first) and its final model when the job SUCCEEDED."""
    facts = _facts_by_step(store, job.id)
    found = []
    if folder.checkpoints.is_dir():
        for child in folder.checkpoints.iterdir():
            step = step_of(child)
            if step is not None and child.is_dir() and not child.is_symlink():
                found.append(step)
    checkpoints = []
    for step in sorted(found):
        verified = cache.check(folder.checkpoint(step))
        if isinstance(verified, str):
            continue  # not complete (being written, half-written, corrupted): not offered
        f = facts.get(step, _StepFacts())
        epoch = _epoch_of(verified)
        checkpoints.append(CheckpointInfo(
            step=step, epoch=epoch if epoch is not None else f.epoch, time=f.time or _mtime(verified),
            size_bytes=verified.size, download_bytes=_download_bytes(verified), metrics=f.metrics,
            adapter=is_adapter(verified.files)))
    final = None
    if job.state == JobState.SUCCEEDED:
        verified = cache.check(folder.model)
        if not isinstance(verified, str):
            meta = read_meta(folder.model)
            adapter = is_adapter(verified.files)
            embedded = bool(meta.get("merged")) and f"{EMBEDDED_MERGED}/config.json" in verified.files
            merged_ready = embedded or not isinstance(cache.check(folder.merged(Which())), str)
            final = FinalModelInfo(step=verified.step, time=job.ended_at or _mtime(verified), size_bytes=verified.size,
                                   download_bytes=_download_bytes(verified), metrics=dict(job.metrics),
                                   adapter=adapter, merged_ready=adapter and merged_ready)
    return CheckpointListing(job.id, checkpoints, final)


def _unit_download_bytes(manifest: UnitManifest) -> int:
    return sum(f.size for name, f in manifest.files.items() if is_sent(name))


def list_stored(job: JobRecord, stored: StoredJob, store: Store) -> CheckpointListing:
    """The listing from the shared store's units: every complete, signed checkpoint, and the final model of
    a SUCCEEDED job (merged_ready when the store holds its merged form)."""
    facts = _facts_by_step(store, job.id)
    checkpoints = []
    for step in sorted(stored.checkpoints):
        unit = stored.checkpoints[step]
        f = facts.get(step, _StepFacts())
        checkpoints.append(CheckpointInfo(
            step=step, epoch=f.epoch, time=f.time or job.started_at or job.created_at, size_bytes=unit.size,
            download_bytes=_unit_download_bytes(unit), metrics=f.metrics, adapter=is_adapter(unit.files)))
    final = None
    if job.state == JobState.SUCCEEDED and stored.model is not None:
        unit = stored.model
        adapter = is_adapter(unit.files)
        merged_ready = f"{EMBEDDED_MERGED}/config.json" in unit.files or Which().name in stored.merged
        final = FinalModelInfo(step=unit.step, time=job.ended_at or job.created_at, size_bytes=unit.size,
                               download_bytes=_unit_download_bytes(unit), metrics=dict(job.metrics),
                               adapter=adapter, merged_ready=adapter and merged_ready)
    return CheckpointListing(job.id, checkpoints, final)
