"""models/retention.py: the pure decisions (which checkpoints stay, when artifacts expire) and applying them."""

from __future__ import annotations

import pytest

from tests.unit.test_models_support import Box
from tunewire_server.checkpoints import is_complete
from tunewire_server.jobs.states import JobState
from tunewire_server.models.deletion import trash_dir
from tunewire_server.models.layout import Which
from tunewire_server.models.retention import CheckpointState, apply_retention, expired, plan_retention, sweep

C = CheckpointState


@pytest.mark.parametrize(("keep", "kept", "removed"), [
    (1, (30,), (10, 20, 25)),  # the default: the newest complete checkpoint (with the final model)
    (2, (20, 30), (10, 25)),
    (0, (), (10, 20, 25, 30)),
    (9, (10, 20, 30), (25,)),  # more than there are: all complete ones; an incomplete one never stays
    (-1, (10, 20, 25, 30), ()),  # keep all
])
def test_a_succeeded_job_keeps_its_newest_complete_checkpoints(keep, kept, removed):
    checkpoints = [C(30, True), C(10, True), C(25, False), C(20, True)]
    plan = plan_retention(JobState.SUCCEEDED, checkpoints, keep)
    assert (plan.keep, plan.remove) == (kept, removed)


def test_an_incomplete_newest_checkpoint_does_not_count_as_the_one_kept():
    plan = plan_retention(JobState.SUCCEEDED, [C(10, True), C(20, False)], 1)
    assert (plan.keep, plan.remove) == ((10,), (20,))


@pytest.mark.parametrize("state", [JobState.FAILED, JobState.CANCELLED, JobState.RUNNING, JobState.QUEUED])
def test_other_jobs_keep_every_checkpoint(state):
    plan = plan_retention(state, [C(10, True), C(20, False)], 0)
    assert (plan.keep, plan.remove) == ((10, 20), ())


def test_expiry_needs_a_ttl_and_a_terminal_job_that_ended_long_enough_ago(tmp_path):
    box = Box(tmp_path)
    done = box.job("done", JobState.FAILED, ended_at=1000.0)
    running = box.job("running", JobState.RUNNING)
    assert expired(done, now=1000.0 + 61, artifact_ttl_s=60)
    assert not expired(done, now=1000.0 + 59, artifact_ttl_s=60)
    assert not expired(done, now=1e12, artifact_ttl_s=None)
    assert not expired(done, now=1e12, artifact_ttl_s=0)
    assert not expired(running, now=1e12, artifact_ttl_s=1)


def test_apply_retention_removes_checkpoints_and_their_merged_forms(tmp_path):
    box = Box(tmp_path)
    job = box.job("j1")
    for step in (2, 4, 6):
        box.checkpoint("j1", step)
    merged = box.folder("j1").merged(Which(2))
    merged.mkdir(parents=True)
    (merged / "model.safetensors").write_bytes(b"m")
    box.final_model("j1", 6)
    removed = apply_retention(job, box.folder("j1"), box.jobs_dir, lambda p: is_complete(p, box.key), 1)
    assert removed == [2, 4]
    assert sorted(p.name for p in box.folder("j1").checkpoints.iterdir()) == ["checkpoint-6"]
    assert not merged.exists()
    assert (box.folder("j1").model / "model.safetensors").exists()
    assert list(trash_dir(box.jobs_dir).iterdir()) == []  # moved there, then removed


def test_sweep_expires_old_terminal_jobs_and_prunes_the_rest(tmp_path):
    box = Box(tmp_path)
    old = box.job("old", JobState.CANCELLED, ended_at=100.0)
    box.checkpoint("old", 1)
    fresh = box.job("fresh", JobState.SUCCEEDED, ended_at=10_000.0)
    box.checkpoint("fresh", 1)
    box.checkpoint("fresh", 2)
    running = box.job("running", JobState.RUNNING)
    box.checkpoint("running", 1)
    box.checkpoint("running", 2)
    told = []
    report = sweep([old, fresh, running], box.jobs_dir, lambda p: is_complete(p, box.key), 1, 3600, 10_100.0,
                   on_removed=lambda job, path: told.append((job.id, path)))
    assert report.expired_jobs == ["old"]
    assert told == [("old", box.jobs_dir / "old")]
    assert not (box.jobs_dir / "old").exists()
    assert report.removed_checkpoints == {"fresh": [1]}
    assert sorted(p.name for p in box.folder("running").checkpoints.iterdir()) == ["checkpoint-1", "checkpoint-2"]
