"""The training worker's side of the shared artifact store (shared_store.py): checkpoints and the final
model go up as complete units, and a job resumed on a replica whose job folder lacks its newest checkpoint
fetches it first.

Where the uploads run: in the worker process, rank 0 only, one at a time on a background thread. A
checkpoint's upload starts once its marker is written (EventCallback.on_save) and training goes on
meanwhile; the next checkpoint's save waits for it first (Trainer's rotation of old checkpoints, at that
save, may delete the folder being uploaded), and so does the end of the job: the final model is uploaded
after every checkpoint, and the worker sends its result only once the model is in the store, so a job is
SUCCEEDED only with its model there. A stop for shutdown (checkpoint and stop) waits for the checkpoint's
upload before the worker exits; a cancel does not. An upload that fails (the store unreachable after
obstore's retries) fails the job at the next of those waits, as SYSTEM ARTIFACT_STORE_UNAVAILABLE, which
the job's retries retry; the store's own put_unit never marks a unit complete that is not.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from tunewire_server import shared_store
from tunewire_server.artifacts import ArtifactNotFound, ArtifactStore
from tunewire_server.checkpoints import step_of, verify

log = logging.getLogger("tunewire.worker")


class Uploader:
    """Copies one job's checkpoints (in the background, one at a time) and its final model into the store."""

    def __init__(self, store: ArtifactStore, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def checkpoint(self, folder: Path) -> None:
        """Start uploading a complete (marked) checkpoint folder, after the previous upload has ended."""
        self.wait()
        key = shared_store.checkpoint_key(self.job_id, folder.name)

        def upload() -> None:
            try:
                self.store.put_unit(folder, key)
                log.info("job %s: %s is in the artifact store", self.job_id, folder.name)
                self._prune(folder.parent)
            except BaseException as exc:  # re-raised by wait(), in the training thread
                self._error = exc

        self._thread = threading.Thread(target=upload, name=f"upload-{folder.name}", daemon=True)
        self._thread.start()

    def _prune(self, checkpoints_dir: Path) -> None:
        """Stored checkpoints whose local folder Trainer rotated away (save_total_limit) go from the store
        too, so the store keeps what the job folder keeps. Runs before the next save, hence before the next
        rotation."""
        for unit in self.store.list_units(shared_store.checkpoints_prefix(self.job_id)):
            name = Path(unit).name
            if step_of(Path(unit)) is not None and not (checkpoints_dir / name).is_dir():
                self.store.delete_prefix(unit)

    def wait(self) -> None:
        """Return once no upload runs; raise the error of one that failed (once)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def model(self, folder: Path) -> None:
        """Upload the final model (its marker last), after every checkpoint; returns once it is stored."""
        self.wait()
        self.store.put_unit(folder, shared_store.model_key(self.job_id))
        log.info("job %s: the final model is in the artifact store", self.job_id)


def fetch_newer_checkpoint(store: ArtifactStore, job_id: str, checkpoints_dir: Path, key: bytes) -> Path | None:
    """Fetch the store's newest complete checkpoint into `checkpoints_dir` when the folder has no complete
    checkpoint (one that verifies) at that step or later; the fetched folder, or None when none was needed.
    The fetched copy is then verified like any local one (checkpoints.complete_checkpoints)."""
    units = store.list_units(shared_store.checkpoints_prefix(job_id))
    stored = sorted((step, k) for k in units
                    if k.count("/") == 3 and (step := step_of(Path(k))) is not None)
    if not stored:
        return None
    newest, unit = stored[-1]
    if _complete_since(checkpoints_dir, key, newest):
        return None
    dest = checkpoints_dir / Path(unit).name
    log.info("job %s: fetching %s from the artifact store", job_id, dest.name)
    return shared_store.fetch_unit(store, unit, dest)


def _complete_since(checkpoints_dir: Path, key: bytes, step: int) -> bool:
    """Whether a local checkpoint at `step` or later verifies (only those are hashed here)."""
    if not checkpoints_dir.is_dir():
        return False
    return any(verify(p, key) is None for p in checkpoints_dir.iterdir()
               if (s := step_of(p)) is not None and s >= step and p.is_dir() and not p.is_symlink())


def fetch_datasets(store: ArtifactStore, spec: dict, plan: dict) -> list[str]:
    """Fetch the job's uploaded datasets that this replica has no copy of (validation ran on another one)
    into the place the plan reads them from, each checked against its sha256 (its name). The fields whose
    dataset the store no longer holds (deleted meanwhile), for the caller to report."""
    missing = []
    for field in ("train_dataset", "eval_dataset"):
        dplan = plan.get(field) or {}
        if not (spec.get(field) or {}).get("uploaded") or dplan.get("kind") != "file":
            continue
        root, name = dplan.get("root"), dplan.get("relative")
        if not root or not name or (Path(root) / name).is_file():
            continue
        Path(root).mkdir(parents=True, exist_ok=True)
        log.info("fetching the uploaded dataset %s from the artifact store", name)
        try:
            store.get_file(shared_store.dataset_key(name), Path(root) / name, expected_sha256=name.split(".")[0])
        except ArtifactNotFound:
            missing.append(field)
    return missing
