"""What the SQLite store adds to the Store contract (test_store.py): durability pragmas, migrations of
databases written by earlier versions, and a full disk."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from tests.support.disk import fill, tmpfs
from tunewire_server.jobs.states import JobState
from tunewire_server.store import SCHEMA, SCHEMA_VERSION, DiskFull, SQLiteStore
from tunewire_server.store.sqlite import MIGRATIONS


def _job(store: SQLiteStore, job_id: str, spec: str = '{"base_model": "m"}'):
    return store.create_job(job_id, spec, None, ("state_change", {"state": "QUEUED"}))


def test_wal_and_full_sync(tmp_path):
    store = SQLiteStore(tmp_path / "db.sqlite")
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL


def test_an_old_database_is_migrated_and_keeps_its_queue_order(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)  # the schema before queue positions, at user_version 0
    for ordinal, job_id in enumerate(["x", "y"], start=1):
        db.execute("INSERT INTO jobs (id, ordinal, spec, state, created_at) VALUES (?, ?, '{}', 'QUEUED', 0)",
                   (job_id, ordinal))
    db.commit()
    db.close()
    store = SQLiteStore(path)
    assert store.pragma("user_version") == SCHEMA_VERSION >= 1
    assert [(j.id, j.queue_seq) for j in store.jobs_in_states([JobState.QUEUED])] == [("x", 1), ("y", 2)]
    _job(store, "z")
    assert [j.id for j in store.jobs_in_states([JobState.QUEUED])] == ["x", "y", "z"]
    store.close()
    assert SQLiteStore(path).pragma("user_version") == SCHEMA_VERSION  # a second open migrates nothing


def test_jobs_stored_before_plans_were_have_none_and_new_ones_keep_theirs(tmp_path):
    path = tmp_path / "v1.sqlite"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")  # as issue 12's server left it
    db.execute("INSERT INTO jobs (id, ordinal, spec, state, created_at, queue_seq) VALUES ('old', 1, '{}', 'QUEUED', 0, 1)")
    db.commit()
    db.close()
    store = SQLiteStore(path)
    assert store.pragma("user_version") == SCHEMA_VERSION >= 2
    store.create_job("new", "{}", None, ("state_change", {}), '{"task": "sft"}')
    assert [(j.id, j.plan) for j in store.jobs_in_states([JobState.QUEUED])] == [("old", None), ("new", {"task": "sft"})]
    job, _ = store.claim_next()  # an old job is claimed like any other (the manager reads its plan.json)
    assert job.id == "old" and job.plan is None


def test_a_version_2_database_upgrades_to_hold_datasets_and_keeps_its_jobs(tmp_path):
    path = tmp_path / "v2.sqlite"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.executescript(MIGRATIONS[0] + ";" + MIGRATIONS[1] + "; PRAGMA user_version = 2;")  # as issue 13 left it
    db.execute("INSERT INTO jobs (id, ordinal, spec, state, created_at, queue_seq) VALUES ('old', 1, '{}', 'QUEUED', 0, 1)")
    db.commit()
    db.close()
    store = SQLiteStore(path)
    assert store.pragma("user_version") == SCHEMA_VERSION >= 3
    assert [j.id for j in store.jobs_in_states([JobState.QUEUED])] == ["old"]
    record = store.add_dataset("ds-" + "a" * 64, "x.jsonl", "jsonl", 3, "a" * 64, "x", "{}")
    assert store.list_datasets() == [record]


def test_a_version_3_database_upgrades_to_number_past_deleted_jobs(tmp_path):
    path = tmp_path / "v3.sqlite"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.executescript(";".join(MIGRATIONS[:3]) + "; PRAGMA user_version = 3;")  # as the dataset uploads left it
    db.execute("INSERT INTO jobs (id, ordinal, spec, state, created_at, queue_seq)"
               " VALUES ('old', 7, '{}', 'SUCCEEDED', 0, 7)")
    db.commit()
    db.close()
    store = SQLiteStore(path)
    assert store.pragma("user_version") == SCHEMA_VERSION >= 4
    assert store.delete_job("old") is True
    assert store.create_job("new", "{}", None, ("state_change", {})).ordinal == 8


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs, unmounted afterwards."""
    with tmpfs(tmp_path / "disk", 2) as mount:
        yield mount


def test_a_write_to_a_full_disk_raises_disk_full_and_changes_nothing(small_disk):
    store = SQLiteStore(small_disk / "db.sqlite")
    _job(store, "a")
    filler = fill(small_disk, (1 << 16, 512))
    big = '{"display_name": "' + "x" * 200_000 + '"}'  # more than any space the WAL already holds

    async def write(*args):
        return await store.write(*args)

    with pytest.raises(DiskFull):
        asyncio.run(write(store.create_job, "b", big, None, ("state_change", {})))
    assert not store.writable
    with pytest.raises(DiskFull):
        asyncio.run(write(store.append_events, "a", [("train_log", {"pad": "y" * 200_000}, None, None)]))
    assert store.get_job("b") is None and [e.seq for e in store.events_after("a", 0)] == [1]
    assert store.get_job("a").last_seq == 1
    filler.unlink()
    asyncio.run(write(store.probe))
    assert store.writable
    asyncio.run(write(store.create_job, "b", big, None, ("state_change", {})))
    assert [j.id for j in store.jobs_in_states([JobState.QUEUED])] == ["a", "b"]
    store.close()
