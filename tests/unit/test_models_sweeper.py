"""models/sweeper.RetentionSweeper: pruning a job that just succeeded, and the periodic TTL sweep, on real job
folders and a real SQLite store (no server)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.unit.test_models_support import Box
from tunewire_server.jobs.states import JobState
from tunewire_server.models.service import ModelService
from tunewire_server.models.sweeper import RetentionSweeper


@pytest.fixture
def box(tmp_path):
    b = Box(tmp_path)
    yield b
    b.store.close()


def sweeper(box: Box, evicted: list[str] | None = None, **kw) -> RetentionSweeper:
    async def evict(path: str) -> None:
        (evicted if evicted is not None else []).append(path)

    models = ModelService(box.jobs_dir, box.root, box.store, box.root / "cwd", evict=evict)
    settings = {"keep_checkpoints": 1, "artifact_ttl_s": 0.0, "interval_s": 600.0, **kw}
    return RetentionSweeper(models, box.store, **settings)


def steps(box: Box, job_id: str) -> list[str]:
    return sorted(p.name for p in box.folder(job_id).checkpoints.iterdir())


def test_a_job_that_succeeded_keeps_its_final_model_and_newest_checkpoints(box):
    box.job("ok", JobState.SUCCEEDED)
    box.final_model("ok", 6)
    for step in (2, 4, 6):
        box.checkpoint("ok", step)
    report = asyncio.run(sweeper(box, keep_checkpoints=1).after_success("ok"))
    assert report.removed_checkpoints == {"ok": [2, 4]}
    assert steps(box, "ok") == ["checkpoint-6"] and box.folder("ok").model.is_dir()


@pytest.mark.parametrize("state", [JobState.FAILED, JobState.CANCELLED, JobState.RUNNING])
def test_only_a_succeeded_job_is_pruned_after_success(box, state):
    box.job("j", state)
    for step in (2, 4):
        box.checkpoint("j", step)
    assert asyncio.run(sweeper(box).after_success("j")) is None
    assert steps(box, "j") == ["checkpoint-2", "checkpoint-4"]


def test_job_succeeded_prunes_in_a_task_that_stop_waits_for(box):
    box.job("ok", JobState.SUCCEEDED)
    for step in (2, 4):
        box.checkpoint("ok", step)

    async def main():
        s = sweeper(box, keep_checkpoints=0)  # the final model only
        s.job_succeeded("ok")
        s.job_succeeded("unknown")  # a job deleted meanwhile: nothing happens
        await s.stop()

    asyncio.run(main())
    assert steps(box, "ok") == []


def test_the_periodic_sweep_removes_expired_jobs_artifacts_and_evicts_them(box):
    box.job("old", JobState.SUCCEEDED, ended_at=time.time() - 100)
    box.final_model("old", 2)
    box.job("new", JobState.SUCCEEDED)
    box.final_model("new", 2)
    box.job("running", JobState.RUNNING)
    evicted: list[str] = []

    async def main():
        s = sweeper(box, evicted, artifact_ttl_s=50.0, interval_s=0.01)
        s.start()  # sweeps at once, then every interval

        async def gone() -> None:
            while not evicted:  # the sweep removes the folder, then evicts its model
                await asyncio.sleep(0.01)

        try:
            await asyncio.wait_for(gone(), 30)
        finally:
            await s.stop()

    asyncio.run(main())
    assert not (box.jobs_dir / "old").exists()
    assert (box.jobs_dir / "new").is_dir() and (box.jobs_dir / "running").is_dir()
    assert evicted == [str(box.jobs_dir / "old")]
    assert box.store.get_job("old").state == JobState.SUCCEEDED  # the record stays


def test_without_a_ttl_no_periodic_sweep_starts(box):
    async def main():
        s = sweeper(box)
        s.start()
        started = s._task is not None
        await s.stop()
        return started

    assert asyncio.run(main()) is False
