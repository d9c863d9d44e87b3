"""Models out with a shared artifact store: what the bucket holds of a job, so that any replica lists,
downloads, merges and deletes any job's models, not only the replica that trained it.

With a store set, the store is the source of truth for a job's models: a checkpoint or final model exists
when its unit is complete there (its marker is stored, written last: the store's completeness rule) and
that marker is signed with the service's checkpoint key (the one every replica shares). Local job folders
are working copies and caches.

Downloads fetch the whole unit into the replica's job folder first (shared_store.fetch_unit: every file
checked against the marker's size and sha256 on the way, the folder put in place by one rename), then serve
it from disk exactly as on one box, after the same signed verification (models/verified.py). Why not stream
from the bucket with ranged GETs: the fetched copy is verified whole before its first byte is sent, so an
incomplete or altered unit is never served even in part; a resumed download (new offsets), a second
download, Predict and a merge on this replica reuse the copy instead of reading the bucket again; and the
reader's protections (models/reader.py) stay the only code path. The cost is the time to fetch the unit
before the first byte (a checkpoint's optimizer state included) and the pod's disk for the copy.

    jobs/<id>/checkpoints/checkpoint-N   a checkpoint
    jobs/<id>/model                      the final model
    jobs/<id>/merged/<final|checkpoint-N> a merged form, computed by the replica first asked, then stored

No torch, no grpc. Every method is blocking (call it through asyncio.to_thread).
"""

from __future__ import annotations

import contextlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

from tunewire_server import shared_store
from tunewire_server.artifacts import (
    ArtifactCorrupt,
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
    UnitManifest,
)
from tunewire_server.checkpoints import (  # the marker's signature, the same function verify uses
    _sign,
    step_of,
)
from tunewire_server.errors import FailedPrecondition, NotFound, Unavailable
from tunewire_server.models.layout import MODEL_DIR, JobFolder, Which

JOBS_PREFIX = "jobs"


def job_prefix(job_id: str) -> str:
    return f"{JOBS_PREFIX}/{job_id}"


def merged_key(job_id: str, which: Which) -> str:
    return f"{job_prefix(job_id)}/merged/{which.name}"


def source_key(job_id: str, which: Which) -> str:
    """The unit of `which` as trained."""
    if which.checkpoint_step is None:
        return shared_store.model_key(job_id)
    return shared_store.checkpoint_key(job_id, which.name)


def signed(manifest: UnitManifest, key: bytes) -> bool:
    """Whether a stored marker is one this service wrote (its HMAC checks out with the shared key)."""
    try:
        body = json.loads(manifest.marker)
        step, files = int(body["step"]), dict(body["files"])
    except (ValueError, KeyError, TypeError):
        return False
    return hmac.compare_digest(str(body.get("hmac", "")), _sign(key, step, files))


@dataclass(frozen=True)
class StoredJob:
    """What the bucket holds of one job: complete checkpoint units by step, the final model, merged forms."""

    checkpoints: dict[int, UnitManifest]
    model: UnitManifest | None
    merged: frozenset[str]  # Which.name of each stored merged form


class SharedModels:
    """A job's models in the shared store, for ModelService."""

    def __init__(self, store: ArtifactStore, key: bytes) -> None:
        self.store = store
        self.key = key

    def stored(self, job_id: str) -> StoredJob:
        """The job's complete, signed units (one LIST, then one GET per marker)."""
        prefix = job_prefix(job_id)
        checkpoints, model, merged = {}, None, set()
        for unit in self.store.list_units(prefix):
            rest = unit[len(prefix) + 1:]
            if rest == MODEL_DIR:
                model = self._signed_manifest(unit)
            elif rest.startswith("checkpoints/") and rest.count("/") == 1:
                step = step_of(Path(rest))
                if step is not None and (m := self._signed_manifest(unit)) is not None:
                    checkpoints[step] = m
            elif rest.startswith("merged/") and rest.count("/") == 1:
                merged.add(rest.split("/", 1)[1])
        return StoredJob(checkpoints, model, frozenset(merged))

    def _signed_manifest(self, unit: str) -> UnitManifest | None:
        try:
            manifest = self.store.manifest(unit)
        except ArtifactNotFound:  # deleted between the LIST and the GET
            return None
        return manifest if signed(manifest, self.key) else None

    def fetch(self, key: str, dest: Path) -> Path:
        """`dest` holding the complete unit `key` (kept as it is when it already holds this marker)."""
        return shared_store.fetch_unit(self.store, key, dest)

    def fetch_source(self, job_id: str, folder: JobFolder, which: Which) -> bool:
        """Fetch `which` as trained into the job folder: False when the store has no complete unit of it."""
        try:
            self.fetch(source_key(job_id, which), folder.source(which))
        except ArtifactNotFound:
            return False
        return True

    def fetch_merged(self, job_id: str, folder: JobFolder, which: Which) -> bool:
        """Fetch a merged form another replica stored: False when there is none."""
        try:
            self.fetch(merged_key(job_id, which), folder.merged(which))
        except ArtifactNotFound:
            return False
        return True

    def put_merged(self, job_id: str, folder: JobFolder, which: Which) -> None:
        """Store a merged form computed here (files, then its signed marker) for the other replicas."""
        self.store.put_unit(folder.merged(which), merged_key(job_id, which))

    def delete_job(self, job_id: str) -> int:
        """Delete every object of the job (markers first): how many there were."""
        return self.store.delete_prefix(job_prefix(job_id))

    def delete_checkpoint(self, job_id: str, step: int) -> None:
        """Delete checkpoint `step` and its merged form."""
        self.store.delete_prefix(shared_store.checkpoint_key(job_id, f"checkpoint-{step}"))
        self.store.delete_prefix(merged_key(job_id, Which(step)))

    def units_by_job(self) -> dict[str, list[str]]:
        """Every complete unit under jobs/, grouped by job id (one LIST of the whole prefix)."""
        found: dict[str, list[str]] = {}
        for unit in self.store.list_units(JOBS_PREFIX):
            parts = unit.split("/")
            if len(parts) >= 3:
                found.setdefault(parts[1], []).append("/".join(parts[2:]))
        return found


@contextlib.contextmanager
def store_errors(job_id: str):
    """The artifact store's errors as the service's own: the store unreachable or refusing (credentials, a
    missing bucket) is UNAVAILABLE; a unit that does not match its marker is FAILED_PRECONDITION."""
    try:
        yield
    except ArtifactCorrupt as exc:
        raise FailedPrecondition(f"job {job_id}'s artifacts in the shared store do not check out: {exc}") from None
    except ArtifactNotFound as exc:
        raise NotFound(f"job {job_id}: {exc}") from None
    except ArtifactError as exc:
        raise Unavailable(f"the shared artifact store cannot be used now for job {job_id}: {exc}") from None
