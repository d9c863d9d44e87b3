"""store/migrate.py: a real SQLite store copied into a real PostgreSQL database (the session's server), and
a data folder's units into a real artifact store (the folder backend); a non-empty target is refused."""

from __future__ import annotations

import pytest

from tests.support.postgres import postgres_server  # noqa: F401 - the session's PostgreSQL
from tunewire_server.artifacts import LocalArtifactStore
from tunewire_server.checkpoints import mark_complete
from tunewire_server.jobs.states import JobState
from tunewire_server.store.base import UploadRecord
from tunewire_server.store.migrate import MIGRATED_OWNER, migrate, sqlite_path
from tunewire_server.store.postgres import PostgresStore
from tunewire_server.store.sqlite import SQLiteStore


@pytest.fixture
def source(tmp_path):
    """A one-box data folder: a finished job with a checkpoint and a model, a running one, a dataset, an
    upload in progress."""
    data = tmp_path / "data"
    store = SQLiteStore(data / "tunewire.db")
    store.create_job("job-done", '{"base_model": "m"}', "req-1", ("state_change", {"state": "QUEUED"}), '{"p": 1}')
    store.append_event("job-done", "train_log", {"step": 1, "loss": 0.5})
    store.update_job("job-done", state=JobState.SUCCEEDED, ended_at=10.0, metrics={"loss": 0.5})
    store.create_job("job-run", "{}", None, ("state_change", {"state": "QUEUED"}))
    store.claim_next()
    store.add_dataset("ds-" + "a" * 64, "d.jsonl", "jsonl", 3, "a" * 64, "a" * 64 + ".jsonl", '{"num_rows": 1}')
    store.begin_upload(UploadRecord("up-1", "e.jsonl", "jsonl", 10, "b" * 64, "", 1.0))
    store.close()
    for unit in ("checkpoints/checkpoint-2", "model", "checkpoints/checkpoint-4"):
        folder = data / "jobs" / "job-done" / unit
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        if unit != "checkpoints/checkpoint-4":  # checkpoint-4 never finished: no marker, not copied
            mark_complete(folder, 2, b"k" * 32)
    (data / "uploads" / "datasets").mkdir(parents=True)
    (data / "uploads" / "datasets" / ("a" * 64 + ".jsonl")).write_text("{}\n")
    return data


def test_jobs_events_datasets_uploads_and_artifacts_are_copied(source, tmp_path, postgres_server):  # noqa: F811
    url = postgres_server.new_database()
    bucket = LocalArtifactStore(tmp_path / "bucket")
    report = migrate(source / "tunewire.db", url, artifacts=bucket, log=lambda _: None)
    assert report.rows["jobs"] == 2 and report.rows["events"] == 4 and report.rows["datasets"] == 1
    assert report.rows["uploads"] == 1 and report.taken_over == ["job-run"]
    assert report.units == 2 and report.files == 1
    assert bucket.list_units("jobs") == ["jobs/job-done/checkpoints/checkpoint-2", "jobs/job-done/model"]
    target = PostgresStore(url)
    try:
        done = target.get_job("job-done")
        assert done.state == JobState.SUCCEEDED and done.metrics == {"loss": 0.5} and done.request_id == "req-1"
        assert done.plan_json == '{"p": 1}'
        assert [(e.seq, e.kind) for e in target.events_after("job-done", 0)] == [(1, "state_change"),
                                                                                  (2, "train_log")]
        assert [j.id for j in target.expired_leases()] == ["job-run"]  # the first replica takes it over
        assert target.lease("job-run").owner == MIGRATED_OWNER
        assert target.get_dataset("ds-" + "a" * 64).size == 3 and target.get_upload("up-1").size == 10
        new = target.create_job("job-new", "{}", None, ("state_change", {"state": "QUEUED"}))
        assert new.ordinal == 3  # numbered past the copied jobs
    finally:
        target.close()


def test_a_non_empty_target_or_a_missing_source_is_refused(source, tmp_path, postgres_server):  # noqa: F811
    url = postgres_server.new_database()
    migrate(source / "tunewire.db", url)
    with pytest.raises(ValueError, match=r"--to: the target store is not empty \(2 jobs"):
        migrate(source / "tunewire.db", url)
    with pytest.raises(ValueError, match="--from: no SQLite store"):
        migrate(tmp_path / "nothing.db", postgres_server.new_database())


def test_sqlite_urls_and_paths():
    assert str(sqlite_path("sqlite:///data/tunewire.db")) == "/data/tunewire.db"
    assert str(sqlite_path("sqlite:////data/tunewire.db")) == "/data/tunewire.db"
    assert str(sqlite_path("rel/tunewire.db")) == "rel/tunewire.db"
