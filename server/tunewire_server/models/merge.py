"""The merged form of a LoRA adapter: computed once in a merge worker, then kept beside the job's adapter.

On the first request for (job, final | checkpoint N) a merge worker process (worker/merge/main.py, started
through workers/process.WorkerProcess) writes the merged model into a temporary folder
jobs/<id>/merged/.<name>.partial-<random>; the control plane then writes the same completeness marker the
final model has (checkpoints.mark_complete: every file fsynced and hashed, signed, written last) and renames
the folder to jobs/<id>/merged/<name>, one complete unit. Concurrent requests for the same merge wait for
that one merge (and a caller that goes away does not stop it for the others); a failed, killed or timed-out
merge removes its temporary folder, so nothing that looks complete is left; a merged folder that does not
verify is never served and is redone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

from tunewire_server.checkpoints import mark_complete
from tunewire_server.errors import FailedPrecondition, NotFound, ResourceExhausted, TunewireError
from tunewire_server.models import deletion
from tunewire_server.models.layout import JobFolder, Which
from tunewire_server.models.verified import VerifiedFolder, VerifyCache
from tunewire_server.workers.process import WorkerProcess

log = structlog.get_logger("tunewire.models.merge")

MERGE_MODULE = "tunewire_server.worker.merge.main"
PARTIAL = ".partial-"


@dataclass(frozen=True)
class MergeJob:
    """What a merge needs (worker/merge/merging.MergeRequest's fields but the output folder)."""

    adapter_dir: str
    base_model: str
    model_dtype: str | None = None
    vocab_size: int | None = None
    label_names: tuple[str, ...] = ()


class Merger:
    """Runs merges, one per (job, which) at a time, and keeps their results."""

    def __init__(self, jobs_dir: Path, key: bytes, cache: VerifyCache, worker_cwd: Path, *,
                 timeout_s: float = 1800.0, env: dict[str, str] | None = None) -> None:
        self._jobs_dir = jobs_dir
        self._key = key
        self._cache = cache
        self._cwd = worker_cwd
        self._timeout_s = timeout_s
        self._env = dict(env or {})
        self._running: dict[Path, asyncio.Task] = {}
        self.started = 0  # merge workers started (for operators and tests)

    async def ensure(self, folder: JobFolder, which: Which, step: int | None, job: MergeJob) -> VerifiedFolder:
        """The verified merged folder of `which`, merging first when there is none."""
        target = folder.merged(which)
        task = self._running.get(target)
        if task is None:
            existing = await asyncio.to_thread(self._cache.check, target)
            if not isinstance(existing, str):
                return existing
            task = self._running.get(target)  # another caller may have started it meanwhile
            if task is None:
                task = asyncio.create_task(self._merge(folder, which, step, job, target))
                self._running[target] = task
                task.add_done_callback(lambda _t, target=target: self._running.pop(target, None))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and not (current is not None and current.cancelling()):
                raise NotFound(f"job {folder.path.name} was deleted while its merge ran") from None
            raise

    async def abort(self, job_dir: Path) -> None:
        """Stop the merges of one job (it is being deleted) and wait until they have cleaned up."""
        tasks = [t for target, t in self._running.items() if target.is_relative_to(job_dir)]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t

    async def close(self) -> None:
        for t in list(self._running.values()):
            t.cancel()
        for t in list(self._running.values()):
            with contextlib.suppress(BaseException):
                await t

    async def _merge(self, folder: JobFolder, which: Which, step: int | None, job: MergeJob,
                     target: Path) -> VerifiedFolder:
        root = folder.merged_root
        try:
            root.mkdir(exist_ok=True)  # never parents: a job folder deleted meanwhile must stay gone
        except FileNotFoundError:
            raise NotFound(f"job {folder.path.name} was deleted") from None
        for stale in root.glob(f".{which.name}{PARTIAL}*"):  # left by a server that died mid-merge
            shutil.rmtree(stale, ignore_errors=True)
        partial = root / f".{which.name}{PARTIAL}{secrets.token_hex(4)}"
        worker: WorkerProcess | None = None
        try:
            self.started += 1
            worker = await WorkerProcess.start(MERGE_MODULE, folder.merged_log(which), self._cwd, self._env)
            log.info("merge started", job_id=folder.path.name, which=which.name, pid=worker.pid)
            await worker.send({**asdict(job), "label_names": list(job.label_names), "output_dir": str(partial)})
            try:
                message = await asyncio.wait_for(worker.receive(), self._timeout_s)
            except TimeoutError:
                raise TunewireError(f"the merge of job {folder.path.name}'s {which.name} took longer than "
                                    f"{self._timeout_s:g} s; stopped") from None
            code = await worker.wait()
            if not message or message.get("kind") != "result":
                raise _merge_error(message, code)
            await asyncio.to_thread(self._seal, partial, target, step)
        except BaseException:
            if worker is not None:
                worker.kill()
                with contextlib.suppress(BaseException):
                    await asyncio.shield(worker.wait())
            await asyncio.to_thread(shutil.rmtree, partial, True)
            raise
        log.info("merge done", job_id=folder.path.name, which=which.name)
        result = await asyncio.to_thread(self._cache.check, target)
        if isinstance(result, str):
            raise TunewireError(f"the merged model of job {folder.path.name} did not verify: {result}")
        return result

    def _seal(self, partial: Path, target: Path, step: int | None) -> None:
        """Mark the merged folder complete (written last), then move it into place by one rename."""
        mark_complete(partial, step or 0, self._key)
        if target.exists():  # an earlier merged folder that did not verify
            deletion.remove(target, self._jobs_dir)
        os.rename(partial, target)
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _merge_error(message: dict | None, code: int) -> TunewireError:
    error = (message or {}).get("error") or {}
    text = str(error.get("message") or f"the merge worker exited with code {code} without a result")[:500]
    if error.get("code") == "DISK_FULL":
        return ResourceExhausted(text)
    if error.get("code") == "MODEL_UNAVAILABLE":
        return FailedPrecondition(text)
    return TunewireError(text)
