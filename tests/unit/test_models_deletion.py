"""models/deletion.py and ModelService.delete: rename to the trash, then remove; twice is fine; running jobs refused."""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.test_models_support import Box
from tunewire_server.errors import FailedPrecondition, NotFound
from tunewire_server.jobs.states import JobState
from tunewire_server.models.deletion import delete_job_artifacts, empty_trash, move_to_trash, trash_dir
from tunewire_server.models.layout import Form, Which
from tunewire_server.models.service import ModelService


def service(box: Box, evicted: list | None = None) -> ModelService:
    async def evict(path: str) -> None:
        if evicted is not None:
            evicted.append(path)

    return ModelService(box.jobs_dir, box.root, box.store, box.root / "cwd", evict=evict)


@pytest.mark.parametrize("state", [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED])
def test_a_terminal_jobs_artifacts_are_removed_and_its_model_evicted(tmp_path, state):
    box = Box(tmp_path)
    job = box.job("j1", state)
    box.checkpoint("j1", 2)
    box.final_model("j1", 2)
    evicted: list[str] = []
    s = service(box, evicted)
    assert asyncio.run(s.delete(job)) is True
    assert not (box.jobs_dir / "j1").exists()
    assert evicted == [str(box.jobs_dir / "j1")]
    assert list(trash_dir(box.jobs_dir).iterdir()) == []
    assert asyncio.run(s.delete(job)) is False  # deleting twice is not an error


@pytest.mark.parametrize("state", [JobState.RUNNING, JobState.QUEUED, JobState.CANCELLING])
def test_a_job_that_is_not_terminal_is_refused(tmp_path, state):
    box = Box(tmp_path)
    job = box.job("j1", state)
    with pytest.raises(FailedPrecondition, match="cancel it first"):
        asyncio.run(service(box).delete(job))
    assert (box.jobs_dir / "j1").exists()


def test_a_download_asked_for_after_deletion_is_not_found(tmp_path):
    box = Box(tmp_path)
    job = box.job("j1")
    box.final_model("j1", 2)
    s = service(box)

    async def go():
        manifest = await s.manifest(job, Which(), Form.AS_TRAINED)  # verified and cached
        await s.delete(job)
        with pytest.raises(NotFound):
            list(s.chunks(manifest))
        with pytest.raises(FailedPrecondition):  # the cache forgot it: nothing verifies any more
            await s.manifest(job, Which(), Form.AS_TRAINED)

    asyncio.run(go())


def test_a_crash_between_rename_and_removal_is_cleaned_up_at_start(tmp_path):
    box = Box(tmp_path)
    box.job("j1")
    box.checkpoint("j1", 2)
    trashed = move_to_trash(box.jobs_dir / "j1", box.jobs_dir)
    assert trashed is not None and trashed.parent == trash_dir(box.jobs_dir)
    assert not (box.jobs_dir / "j1").exists()  # no reader finds it from here on
    service(box).start()
    assert not trashed.exists()
    assert empty_trash(box.jobs_dir) == 0


@pytest.mark.parametrize("bad", ["", ".trash", "../x", "a/b", "a\0b"])
def test_only_job_ids_name_a_folder_to_delete(tmp_path, bad):
    box = Box(tmp_path)
    with pytest.raises(ValueError):
        delete_job_artifacts(box.jobs_dir, bad)


def test_the_inference_cache_drops_the_models_under_a_deleted_jobs_folder_only(tmp_path):
    import json

    from tests import tiny
    from tunewire_server.worker.inference.main import ModelCache

    jobs = tmp_path / "jobs"
    for job_id in ("j1", "j10"):
        model = tiny.build_tiny_bert(jobs / job_id / "model")
        (model / "tunewire.json").write_text(json.dumps({"task": "classification", "label_names": ["a", "b"]}))
    cache = ModelCache(size=4)
    kept = cache.get(str(jobs / "j10" / "model"))
    cache.get(str(jobs / "j1" / "model"))
    assert cache.evict(str(jobs / "j1")) == 1
    assert cache.evict(str(jobs / "j1")) == 0
    assert cache.get(str(jobs / "j10" / "model")) is kept  # "j10" is not under "j1"
    assert cache.evict(str(jobs / "j10" / "model") + "/") == 1
