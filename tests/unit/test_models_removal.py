"""models/removal.delete_job: a terminal job's artifacts, cache entry, events and record, on a real SQLite store
and real job folders (no server)."""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.test_models_support import Box
from tunewire_server.errors import FailedPrecondition
from tunewire_server.jobs.states import JobState
from tunewire_server.models.removal import delete_job
from tunewire_server.models.service import ModelService


@pytest.fixture
def box(tmp_path):
    b = Box(tmp_path)
    yield b
    b.store.close()


def service(box: Box, evicted: list[str]) -> ModelService:
    async def evict(path: str) -> None:
        evicted.append(path)

    return ModelService(box.jobs_dir, box.root, box.store, box.root / "cwd", evict=evict)


def test_a_terminal_job_loses_its_artifacts_events_and_record(box):
    job = box.job("done", JobState.SUCCEEDED)
    box.final_model("done", 4)
    box.checkpoint("done", 2)
    box.event("done", "train_log", {"step": 1})
    box.job("other", JobState.SUCCEEDED)
    evicted: list[str] = []
    assert asyncio.run(delete_job(box.store, service(box, evicted), job.id)) is True
    assert not (box.jobs_dir / "done").exists() and (box.jobs_dir / "other").exists()
    assert box.store.get_job("done") is None and box.store.events_after("done", 0) == []
    assert evicted == [str(box.jobs_dir / "done")]  # its model leaves the inference cache
    assert asyncio.run(delete_job(box.store, service(box, evicted), job.id)) is False  # twice: not an error
    assert asyncio.run(delete_job(box.store, service(box, evicted), "never")) is False


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.RUNNING, JobState.CANCELLING])
def test_a_job_that_is_not_terminal_is_refused_and_kept_whole(box, state):
    box.job("live", state)
    box.checkpoint("live", 2)
    with pytest.raises(FailedPrecondition, match="cancel it first"):
        asyncio.run(delete_job(box.store, service(box, []), "live"))
    assert box.store.get_job("live").state == state and box.folder("live").checkpoint(2).is_dir()


@pytest.mark.parametrize("state", [JobState.FAILED, JobState.CANCELLED])
def test_failed_and_cancelled_jobs_are_deleted_too(box, state):
    box.job("ended", state)
    box.checkpoint("ended", 2)
    assert asyncio.run(delete_job(box.store, service(box, []), "ended")) is True
    assert not (box.jobs_dir / "ended").exists() and box.store.get_job("ended") is None
