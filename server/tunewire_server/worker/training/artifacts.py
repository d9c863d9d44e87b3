"""Write a job's final model so that a half-written one is never taken for a finished one."""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from tunewire_server.layout import META_FILE, MODEL_DIR, PARTIAL_MODEL_DIR, RUN_DIR

__all__ = ["META_FILE", "MODEL_DIR", "RUN_DIR", "read_meta", "save_final_model"]


def _fsync_tree(path: Path) -> None:
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_final_model(job_dir: Path, save: Callable[[str], None], meta: dict, *,
                     main_process: bool | None = None, key: bytes | None = None, step: int = 0) -> Path:
    """`save(folder)` writes into model.partial/; it becomes model/ by one rename, after an fsync.

    With `key`, a completeness marker (checkpoints.mark_complete: each file's size and sha256, signed) is
    written last into model.partial/ before the rename, so a model corrupted later can be told. Any failure
    (a full disk) removes model.partial/ and raises; model/ is then never there. A failure with the disk
    (nearly) full is raised as an OSError(ENOSPC) even where the library said something else (torch.save).

    In a multi-process run every rank calls this, since saving may need them all (gathers); only the
    main process (global rank 0; by default read from torch.distributed) writes model/. The others
    save into a scratch folder of their own, removed at once, so nothing they write can race rank 0's.
    """
    final = job_dir / MODEL_DIR
    rank = _global_rank()
    if main_process is None:
        main_process = rank == 0
    if not main_process:
        scratch = job_dir / RUN_DIR / f"{MODEL_DIR}.rank{rank}"
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            save(str(scratch))  # Trainer.save_model writes nothing here; a runner's own extra saves might
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return final
    partial = job_dir / PARTIAL_MODEL_DIR
    shutil.rmtree(partial, ignore_errors=True)
    try:
        save(str(partial))
        (partial / META_FILE).write_text(json.dumps(meta, indent=2))
        if key is not None:
            from tunewire_server.checkpoints import mark_complete

            mark_complete(partial, step, key)  # fsyncs every file, then writes the marker last
        _fsync_tree(partial)
    except BaseException as exc:
        from tunewire_server.worker.training.failures import nearly_full

        full = isinstance(exc, Exception) and not isinstance(exc, OSError) and nearly_full(partial)
        shutil.rmtree(partial, ignore_errors=True)
        if full:
            raise OSError(errno.ENOSPC, "No space left on device while saving the model") from exc
        raise
    if final.exists():
        shutil.rmtree(final)
    os.rename(partial, final)
    fd = os.open(job_dir, os.O_RDONLY)  # the rename itself is durable before the result is sent
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final


def _global_rank() -> int:
    import sys

    if "torch" not in sys.modules:  # the control plane and inference never start a process group
        return 0
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def read_meta(model_dir: Path) -> dict:
    return json.loads((model_dir / META_FILE).read_text())
