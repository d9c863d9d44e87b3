"""What a download sends: the files of one verified model folder, each with its size and sha256.

A manifest is built from a folder whose completeness marker verifies; the sizes and hashes are the
marker's (checked against the files by the verification), so the client can check every byte it got.
Refusals: the final model of a job that has not SUCCEEDED (FailedPrecondition), a checkpoint step below 0
(InvalidSpec on `checkpoint`), a checkpoint that does not exist (NotFound) or does not verify
(FailedPrecondition), the merged form of a job that is not a LoRA adapter (InvalidSpec on `form`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunewire_server.errors import FailedPrecondition, FieldViolation, InvalidSpec, NotFound
from tunewire_server.jobs.states import JobState
from tunewire_server.models.layout import EMBEDDED_MERGED, Form, JobFolder, Which, read_meta
from tunewire_server.models.selection import is_adapter, is_sent
from tunewire_server.models.verified import VerifiedFolder, VerifyCache
from tunewire_server.store.base import JobRecord


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the download folder, POSIX form, one component (no folders)
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """The files of one download and the folder they are read from (`root`, never sent to a client)."""

    job_id: str
    which: Which
    form: Form
    step: int | None  # the training step of these weights, where known
    root: Path
    files: tuple[FileEntry, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def entry(self, path: str) -> FileEntry | None:
        return next((f for f in self.files if f.path == path), None)


def check_which(which: Which) -> None:
    if which.checkpoint_step is not None and which.checkpoint_step < 0:
        raise InvalidSpec(FieldViolation("checkpoint", f"must be 0 or more, not {which.checkpoint_step}"))


def verified_source(job: JobRecord, folder: JobFolder, which: Which, cache: VerifyCache) -> VerifiedFolder:
    """The verified folder of `which` as trained, or the refusal that says why there is none."""
    check_which(which)
    if which.checkpoint_step is None:
        if job.state != JobState.SUCCEEDED:
            raise FailedPrecondition(f"job {job.id} is {job.state.value}; only a SUCCEEDED job has a final model "
                                     "(a checkpoint can be downloaded: see ListCheckpoints)")
        result = cache.check(folder.model)
        if isinstance(result, str):
            raise FailedPrecondition(f"the final model of job {job.id} cannot be sent: {result}")
        return result
    path = folder.checkpoint(which.checkpoint_step)
    if path.is_symlink() or not path.is_dir():
        raise NotFound(f"checkpoint: job {job.id} has no checkpoint at step {which.checkpoint_step} "
                       "(ListCheckpoints lists those there are)")
    result = cache.check(path)
    if isinstance(result, str):
        raise FailedPrecondition(f"checkpoint: the checkpoint at step {which.checkpoint_step} of job {job.id} is "
                                 f"not complete: {result}")
    return result


def embedded_merged(source: VerifiedFolder) -> bool:
    """Whether a final model carries its merged form inside (a job run with sft.save_merged_model)."""
    return bool(read_meta(source.path).get("merged")) and f"{EMBEDDED_MERGED}/config.json" in source.files


def require_adapter(job: JobRecord, source: VerifiedFolder) -> None:
    if not is_adapter(source.files):
        raise InvalidSpec(FieldViolation("form", f"job {job.id} trained the whole model, not a LoRA adapter: "
                                                 "there is nothing to merge; ask for the model as trained"))


def manifest_of(job: JobRecord, which: Which, form: Form, verified: VerifiedFolder, step: int | None = None,
                prefix: str = "") -> Manifest:
    """The manifest of the files under `prefix` ("" or "merged/") of a verified folder."""
    files = []
    for name, f in sorted(verified.files.items()):
        if prefix and not name.startswith(prefix):
            continue
        relative = name[len(prefix):]
        if is_sent(relative):
            files.append(FileEntry(relative, f.size, f.sha256))
    root = verified.path / prefix.rstrip("/") if prefix else verified.path
    return Manifest(job.id, which, form, step if step is not None else verified.step, root, tuple(files))
