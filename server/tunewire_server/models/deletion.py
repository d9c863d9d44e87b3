"""Removing artifacts so that nothing half-removed is ever read as whole.

A folder is first renamed into the trash (one atomic rename on the same disk), then removed there. From the
rename on, no new reader finds it (a download, a Predict loading the model, a listing); a download already
reading a file reads that file to its end from the unlinked data and then ends with NotFound (models/reader.py);
a reader never sees a folder with some files gone but its marker still there. The trash lives in the jobs
folder so that the rename never crosses a file system; whatever a crash left in it is removed by
empty_trash at the next start. Removing what is already gone is not an error.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

TRASH_DIR = ".trash"  # under the jobs folder; a job id never starts with "."


def trash_dir(jobs_dir: Path) -> Path:
    return jobs_dir / TRASH_DIR


def move_to_trash(path: Path, jobs_dir: Path) -> Path | None:
    """Rename `path` (a job folder or a folder inside one) into the trash: the trashed path, or None when
    there was nothing to move."""
    trash = trash_dir(jobs_dir)
    trash.mkdir(parents=True, exist_ok=True)
    target = trash / f"{path.name}.{secrets.token_hex(6)}"
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return None
    return target


def remove(path: Path, jobs_dir: Path) -> bool:
    """Move `path` to the trash, then remove it: whether there was anything to remove."""
    trashed = move_to_trash(path, jobs_dir)
    if trashed is None:
        return False
    shutil.rmtree(trashed, ignore_errors=True)
    return True


def delete_job_artifacts(jobs_dir: Path, job_id: str) -> bool:
    """Remove a job's folder (checkpoints, final model, merged models, logs): whether there was one. The
    caller makes sure the job is terminal and no merge of it is running (ModelService.delete does both)."""
    if not job_id or "/" in job_id or job_id.startswith(".") or "\0" in job_id:
        raise ValueError(f"not a job id: {job_id!r}")
    return remove(jobs_dir / job_id, jobs_dir)


def empty_trash(jobs_dir: Path) -> int:
    """Remove whatever an interrupted deletion left in the trash: how many entries were removed."""
    trash = trash_dir(jobs_dir)
    if not trash.is_dir():
        return 0
    n = 0
    for entry in trash.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        n += 1
    return n
