"""models/shared.py and retention.sweep_shared over a real artifact store (the folder backend; the S3 one is
covered end to end in tests/robust/test_shared_models.py): what the store holds of a job, signed markers only,
fetching a unit into a job folder, retention and deletion in the store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tunewire_server.artifacts import LocalArtifactStore
from tunewire_server.checkpoints import mark_complete, verify
from tunewire_server.errors import NotFound, Unavailable
from tunewire_server.jobs.states import JobState
from tunewire_server.models.layout import JobFolder, Which
from tunewire_server.models.retention import sweep_shared
from tunewire_server.models.shared import SharedModels, merged_key, store_errors
from tunewire_server.store.base import JobRecord

KEY = b"k" * 32


def unit(root: Path, name: str, step: int, key: bytes = KEY) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(f'{{"a": {step}}}')
    (folder / "model.safetensors").write_bytes(bytes([step]) * 100)
    mark_complete(folder, step, key)
    return folder


def job(job_id: str, state: JobState = JobState.SUCCEEDED, ended_at: float | None = None) -> JobRecord:
    return JobRecord(id=job_id, ordinal=1, spec_json="{}", state=state, created_at=0.0,
                     ended_at=ended_at or time.time())


@pytest.fixture
def shared(tmp_path) -> SharedModels:
    store = LocalArtifactStore(tmp_path / "bucket")
    work = tmp_path / "work"
    for step in (2, 4, 6):
        store.put_unit(unit(work, f"checkpoint-{step}", step), f"jobs/j1/checkpoints/checkpoint-{step}")
    store.put_unit(unit(work, "model", 6), "jobs/j1/model")
    store.put_unit(unit(work, "foreign", 8, key=b"x" * 32), "jobs/j1/checkpoints/checkpoint-8")
    store.put_unit(unit(work, "merged", 6), merged_key("j1", Which()))
    return SharedModels(store, KEY)


def test_stored_lists_only_signed_complete_units(shared):
    stored = shared.stored("j1")
    assert sorted(stored.checkpoints) == [2, 4, 6]  # checkpoint-8's marker was signed with another key
    assert stored.model is not None and stored.model.step == 6
    assert stored.merged == {"final"}
    assert shared.stored("other").checkpoints == {}


def test_a_fetched_unit_verifies_in_the_job_folder(shared, tmp_path):
    folder = JobFolder(tmp_path / "jobs" / "j1")
    assert shared.fetch_source("j1", folder, Which(4))
    assert verify(folder.checkpoint(4), KEY) is None
    assert shared.fetch_source("j1", folder, Which())
    assert verify(folder.model, KEY) is None
    assert not shared.fetch_source("j1", folder, Which(3))


def test_sweep_shared_prunes_a_succeeded_job_and_deletes_an_expired_one(shared):
    report = sweep_shared(shared, [job("j1")], keep_checkpoints=1, artifact_ttl_s=None, now=time.time())
    # checkpoint-8 is newer but not signed with the service's key: never the one kept
    assert report.removed_checkpoints == {"j1": [2, 4, 8]}
    assert sorted(shared.stored("j1").checkpoints) == [6]
    assert shared.store.list_units("jobs/j1/checkpoints") == ["jobs/j1/checkpoints/checkpoint-6"]
    failed = sweep_shared(shared, [job("j1", JobState.FAILED)], 0, None, time.time())
    assert failed.removed_checkpoints == {}
    old = job("j1", ended_at=time.time() - 100)
    expired = sweep_shared(shared, [old], keep_checkpoints=1, artifact_ttl_s=10, now=time.time())
    assert expired.expired_jobs == ["j1"]
    assert shared.store.list_units("jobs") == []


def test_delete_job_removes_every_object_and_again_is_zero(shared):
    assert shared.delete_job("j1") > 0
    assert shared.store.list_units("") == []
    assert shared.delete_job("j1") == 0


def test_store_errors_become_the_service_errors():
    from tunewire_server.artifacts import ArtifactNotFound, ArtifactStoreUnavailable

    with pytest.raises(Unavailable, match="shared artifact store"), store_errors("j1"):
        raise ArtifactStoreUnavailable("down")
    with pytest.raises(NotFound), store_errors("j1"):
        raise ArtifactNotFound("gone")
