"""Builders shared by the test_models_*.py tests (no tests here): a real SQLite store with jobs and events, and
job folders with checkpoints and final models marked complete by the real marker code (checkpoints.py)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from tunewire_server.checkpoints import load_or_create_key, mark_complete
from tunewire_server.jobs.states import JobState
from tunewire_server.models.layout import JobFolder
from tunewire_server.store import SQLiteStore

WEIGHTS = b"w" * 3000 + b"end"
OPTIMIZER = b"o" * 5000


class Box:
    """A data dir with a store, a jobs folder and the server's marker key."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.jobs_dir = root / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.store = SQLiteStore(root / "db.sqlite")
        self.key = load_or_create_key(root)

    def job(self, job_id: str, state: JobState = JobState.SUCCEEDED, *, metrics: dict | None = None,
            ended_at: float | None = None, plan: dict | None = None):
        self.store.create_job(job_id, '{"base_model": "m"}', None, ("state_change", {"state": "QUEUED"}),
                              json.dumps(plan or {"base_model": "m"}))
        fields: dict = {"state": state}
        if state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
            fields["ended_at"] = ended_at if ended_at is not None else time.time()
        if metrics:
            fields["metrics"] = metrics
        self.store.update_job(job_id, **fields)
        (self.jobs_dir / job_id).mkdir(exist_ok=True)
        return self.store.get_job(job_id)

    def folder(self, job_id: str) -> JobFolder:
        return JobFolder(self.jobs_dir / job_id)

    def event(self, job_id: str, kind: str, payload: dict, at: float | None = None) -> None:
        self.store.append_event(job_id, kind, payload, None, at)

    def checkpoint(self, job_id: str, step: int, *, epoch: float | None = None, adapter: bool = False,
                   complete: bool = True) -> Path:
        folder = self.folder(job_id).checkpoint(step)
        write_model_files(folder, adapter=adapter)
        (folder / "optimizer.pt").write_bytes(OPTIMIZER)
        (folder / "scheduler.pt").write_bytes(b"s" * 10)
        (folder / "rng_state.pth").write_bytes(b"r" * 10)
        (folder / "training_args.bin").write_bytes(b"t" * 10)
        if epoch is not None:
            (folder / "trainer_state.json").write_text(json.dumps({"epoch": epoch, "global_step": step}))
        if complete:
            mark_complete(folder, step, self.key)
        return folder

    def final_model(self, job_id: str, step: int, *, adapter: bool = False, meta: dict | None = None,
                    embedded_merged: bool = False) -> Path:
        folder = self.folder(job_id).model
        write_model_files(folder, adapter=adapter)
        (folder / "training_args.bin").write_bytes(b"t" * 10)
        (folder / "tunewire.json").write_text(json.dumps({"task": "sft", "adapter": adapter, "base_model": "m",
                                                          "merged": "merged" if embedded_merged else None,
                                                          **(meta or {})}))
        if embedded_merged:
            write_model_files(folder / "merged", adapter=False)
        mark_complete(folder, step, self.key)
        return folder


def write_model_files(folder: Path, *, adapter: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if adapter:
        (folder / "adapter_model.safetensors").write_bytes(WEIGHTS)
        (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "task_type": "CAUSAL_LM"}')
    else:
        (folder / "model.safetensors").write_bytes(WEIGHTS)
        (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    (folder / "tokenizer_config.json").write_text("{}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
