"""ModelService: the models-out side of the job core, for the servicer's ListCheckpoints, DownloadModel and
DeleteJob (and for a retention sweep). One instance per server; the methods marked blocking read or hash
files and belong in a thread (asyncio.to_thread), the async ones run on the server's event loop.

With a shared artifact store (`artifacts`), the store is what is listed, downloaded and deleted
(models/shared.py): a unit is fetched into this replica's job folder before it is served, a merged form
computed here is stored for the other replicas, and deletion and retention remove the store's objects too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path

import structlog

from tunewire_server.artifacts import ArtifactError, ArtifactStore
from tunewire_server.checkpoints import load_or_create_key
from tunewire_server.errors import FailedPrecondition, NotFound
from tunewire_server.jobs.states import JobState
from tunewire_server.models import deletion, retention
from tunewire_server.models.layout import Form, JobFolder, Which, read_meta
from tunewire_server.models.listing import CheckpointListing, list_checkpoints, list_stored
from tunewire_server.models.manifest import (
    Manifest,
    check_which,
    embedded_merged,
    manifest_of,
    require_adapter,
    verified_source,
)
from tunewire_server.models.merge import MergeJob, Merger
from tunewire_server.models.reader import DEFAULT_CHUNK, DownloadChunk, download_chunks, stream_chunks
from tunewire_server.models.shared import SharedModels, store_errors
from tunewire_server.models.verified import VerifyCache
from tunewire_server.store.base import JobRecord, Store

log = structlog.get_logger("tunewire.models")


class ModelService:
    """Listing, downloads (with merges on demand), deletion and retention of jobs' models.

    `evict(path)`, when given, is awaited after a job's folder is removed with the job folder's path: it
    drops every model under that path from the inference worker's cache (InferenceClient.evict)."""

    def __init__(self, jobs_dir: Path, data_dir: Path, store: Store, worker_cwd: Path, *, torch_threads: int = 0,
                 merge_timeout_s: float = 1800.0, evict: Callable[[str], Awaitable[None]] | None = None,
                 artifacts: ArtifactStore | None = None) -> None:
        self.jobs_dir = jobs_dir
        self.store = store
        self.key = load_or_create_key(data_dir)
        self.cache = VerifyCache(self.key)
        env = {"TUNEWIRE_TORCH_THREADS": str(torch_threads)} if torch_threads else {}
        self.merger = Merger(jobs_dir, self.key, self.cache, worker_cwd, timeout_s=merge_timeout_s, env=env)
        self._evict = evict
        self._deleting: set[str] = set()
        self.shared = SharedModels(artifacts, self.key) if artifacts is not None else None

    def folder(self, job_id: str) -> JobFolder:
        return JobFolder(self.jobs_dir / job_id)

    # --- listing and downloads ---------------------------------------------------------------------

    def list_checkpoints(self, job: JobRecord) -> CheckpointListing:
        """Blocking. The job's complete checkpoints (oldest first) and its final model: from the shared
        store when there is one (the same answer on every replica), else from the job folder."""
        if self.shared is None:
            return list_checkpoints(job, self.folder(job.id), self.store, self.cache)
        with store_errors(job.id):
            stored = self.shared.stored(job.id)
        return list_stored(job, stored, self.store)

    async def manifest(self, job: JobRecord, which: Which, form: Form) -> Manifest:
        """What a download of `which` in `form` sends; a merged form is merged first when it is not on disk
        (concurrent requests wait for one merge). Raises the refusals models/manifest.py lists, NotFound for a
        job being deleted, and the merge's own errors (ResourceExhausted for a full disk, FailedPrecondition
        when the base model is gone)."""
        if job.id in self._deleting:
            raise NotFound(f"job {job.id} is being deleted")
        folder = self.folder(job.id)
        if self.shared is not None:
            await asyncio.to_thread(self._fetch_source, job, folder, which)
        source = await asyncio.to_thread(verified_source, job, folder, which, self.cache)
        if form == Form.AS_TRAINED:
            return manifest_of(job, which, form, source)
        require_adapter(job, source)
        if which.checkpoint_step is None and embedded_merged(source):
            return manifest_of(job, which, form, source, prefix="merged/")
        stored = False
        if self.shared is not None:
            with store_errors(job.id):
                stored = await asyncio.to_thread(self.shared.fetch_merged, job.id, folder, which)
        merged = await self.merger.ensure(folder, which, source.step, self._merge_job(job, folder, source.path))
        if self.shared is not None and not stored:
            await self._store_merged(job, folder, which)
        return manifest_of(job, which, form, merged, step=source.step)

    def _fetch_source(self, job: JobRecord, folder: JobFolder, which: Which) -> None:
        """Blocking. Make the job folder hold the store's unit of `which` (fetched unless this very unit is
        there already); the refusals when the store has none. A local folder the store does not hold is
        never served: the store is what every replica answers from."""
        check_which(which)
        if which.checkpoint_step is None and job.state != JobState.SUCCEEDED:
            return  # verified_source refuses it, with the reason
        with store_errors(job.id):
            found = self.shared.fetch_source(job.id, folder, which)
        if found:
            return
        if which.checkpoint_step is None:
            raise FailedPrecondition(f"the final model of job {job.id} is not in the shared artifact store")
        raise NotFound(f"checkpoint: job {job.id} has no checkpoint at step {which.checkpoint_step} "
                       "(ListCheckpoints lists those there are)")

    async def _store_merged(self, job: JobRecord, folder: JobFolder, which: Which) -> None:
        """Store a merged form computed (or held) here that the store lacks, for the other replicas; a
        failure is logged, not raised: this download is served from the local copy anyway."""
        try:
            await asyncio.to_thread(self.shared.put_merged, job.id, folder, which)
            log.info("merged model stored", job_id=job.id, which=which.name)
        except ArtifactError as exc:
            log.warning("the merged model could not be stored", job_id=job.id, which=which.name, error=str(exc))

    def _merge_job(self, job: JobRecord, folder: JobFolder, adapter_dir: Path) -> MergeJob:
        plan = job.plan or {}
        meta = read_meta(folder.model)
        base = meta.get("base_model") or plan.get("base_model")
        if not base:
            raise FailedPrecondition(f"job {job.id} records no base model to merge its adapter into")
        return MergeJob(adapter_dir=str(adapter_dir), base_model=str(base),
                        model_dtype=meta.get("model_dtype") or (plan.get("sft") or {}).get("model_dtype"),
                        vocab_size=meta.get("vocab_size"), label_names=tuple(plan.get("label_names") or ()))

    @staticmethod
    def chunks(manifest: Manifest, offsets: Mapping[str, int] | None = None,
               chunk_size: int = DEFAULT_CHUNK) -> Iterator[DownloadChunk]:
        """Blocking iterator. The download's files in manifest order, each from the client's offset."""
        return download_chunks(manifest, offsets, chunk_size)

    @staticmethod
    def stream(manifest: Manifest, offsets: Mapping[str, int] | None = None,
               chunk_size: int = DEFAULT_CHUNK) -> AsyncIterator[DownloadChunk]:
        """The same for the event loop: each chunk read in a thread, one at a time as the consumer asks."""
        return stream_chunks(manifest, offsets, chunk_size)

    # --- deletion and retention --------------------------------------------------------------------

    async def delete(self, job: JobRecord) -> bool:
        """Remove a terminal job's artifacts (checkpoints, model, merged models, logs) and evict its model
        from the inference cache: whether anything was there. A job that is not terminal is refused
        (FailedPrecondition: cancel it first); deleting again is not an error. The job's record and events
        are the store's to remove."""
        if not job.terminal:
            raise FailedPrecondition(f"job {job.id} is {job.state.value}; cancel it first, then delete it")
        self._deleting.add(job.id)
        try:
            folder = self.folder(job.id)
            await self.merger.abort(folder.path)
            stored = 0
            if self.shared is not None:  # first: if the store cannot be reached, nothing is removed
                with store_errors(job.id):
                    stored = await asyncio.to_thread(self.shared.delete_job, job.id)
            trashed = await asyncio.to_thread(deletion.move_to_trash, folder.path, self.jobs_dir) \
                if folder.path.exists() else None
            self.cache.forget(folder.path)
            if self._evict is not None:
                await self._evict(str(folder.path))
            if trashed is not None:
                await asyncio.to_thread(deletion.remove, trashed, self.jobs_dir)
            log.info("job artifacts deleted", job_id=job.id, existed=trashed is not None, stored_objects=stored)
            return trashed is not None or stored > 0
        finally:
            self._deleting.discard(job.id)

    def sweep(self, jobs: Iterable[JobRecord], keep_checkpoints: int, artifact_ttl_s: float | None,
              now: float | None = None) -> retention.RetentionReport:
        """Blocking. Apply retention to these jobs (models/retention.py). Expired jobs' models are not evicted
        here: call evict_many with the report's expired_jobs from the event loop."""
        jobs = list(jobs)
        now = time.time() if now is None else now
        report = retention.sweep(jobs, self.jobs_dir, lambda p: not isinstance(self.cache.check(p), str),
                                 keep_checkpoints, artifact_ttl_s, now)
        if self.shared is not None:
            report = retention.merge_reports(report, retention.sweep_shared(self.shared, jobs, keep_checkpoints,
                                                                            artifact_ttl_s, now))
        for job_id in report.expired_jobs:
            self.cache.forget(self.jobs_dir / job_id)
        for job_id in report.removed_checkpoints:
            self.cache.forget(self.folder(job_id).checkpoints)
        return report

    async def evict_many(self, job_ids: Iterable[str]) -> None:
        if self._evict is not None:
            for job_id in job_ids:
                await self._evict(str(self.jobs_dir / job_id))

    def start(self) -> None:
        """Blocking. Remove what an interrupted deletion left behind."""
        deletion.empty_trash(self.jobs_dir)

    async def close(self) -> None:
        await self.merger.close()
