"""Write a job's final model so that a half-written one is never taken for a finished one."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

MODEL_DIR = "model"
META_FILE = "tunewire.json"


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


def save_final_model(job_dir: Path, save: Callable[[str], None], meta: dict) -> Path:
    """`save(folder)` writes into model.partial/; it becomes model/ by one rename, after an fsync."""
    partial = job_dir / (MODEL_DIR + ".partial")
    final = job_dir / MODEL_DIR
    shutil.rmtree(partial, ignore_errors=True)
    save(str(partial))
    (partial / META_FILE).write_text(json.dumps(meta, indent=2))
    _fsync_tree(partial)
    if final.exists():
        shutil.rmtree(final)
    os.rename(partial, final)
    return final


def read_meta(model_dir: Path) -> dict:
    return json.loads((model_dir / META_FILE).read_text())
