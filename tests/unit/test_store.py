from tunewire_server.states import JobState
from tunewire_server.store import Store


def _job(store: Store, job_id: str, request_id: str | None = None):
    return store.create_job(job_id, '{"base_model": "m"}', request_id, ("state_change", {"state": "QUEUED"}))


def test_wal_and_full_sync(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL


def test_job_is_durable_with_its_first_event(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    job = _job(store, "job-a", "req-1")
    assert job.state == JobState.QUEUED and job.last_seq == 1
    store.close()
    reopened = Store(tmp_path / "db.sqlite")
    assert reopened.get_job("job-a").spec_json == '{"base_model": "m"}'
    assert reopened.get_job_by_request_id("req-1").id == "job-a"
    assert [e.seq for e in reopened.events_after("job-a", 0)] == [1]


def test_event_seqs_are_gapless_per_job_and_update_the_job(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    _job(store, "a")
    _job(store, "b")
    for i in range(5):
        store.append_event("a", "train_log", {"step": i}, {"progress": i / 5})
    store.append_event("b", "train_log", {"step": 0})
    assert [e.seq for e in store.events_after("a", 0)] == [1, 2, 3, 4, 5, 6]
    assert [e.payload["step"] for e in store.events_after("a", 3)] == [2, 3, 4]
    assert [e.seq for e in store.events_after("b", 0)] == [1, 2]
    job = store.get_job("a")
    assert job.last_seq == 6 and job.progress == 0.8


def test_list_is_newest_first_and_pages(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    for i in range(5):
        _job(store, f"j{i}")
    store.update_job("j1", state=JobState.RUNNING)
    page = store.list_jobs(limit=2)
    assert [j.id for j in page] == ["j4", "j3"]
    assert [j.id for j in store.list_jobs(before_ordinal=page[-1].ordinal, limit=10)] == ["j2", "j1", "j0"]
    assert [j.id for j in store.list_jobs([JobState.RUNNING])] == ["j1"]
    assert [j.id for j in store.jobs_in_states([JobState.QUEUED])] == ["j0", "j2", "j3", "j4"]  # FIFO


def test_a_retried_job_goes_behind_the_jobs_queued_before_its_retry(tmp_path):
    from tunewire_server.store import BACK_OF_QUEUE

    store = Store(tmp_path / "db.sqlite")
    for name in ("a", "b", "c"):
        _job(store, name)
    store.append_event("a", "state_change", {"state": "RUNNING"}, {"state": JobState.RUNNING})
    store.append_event("a", "state_change", {"state": "QUEUED"}, {"state": JobState.QUEUED, "queue_seq": BACK_OF_QUEUE})
    assert [j.id for j in store.jobs_in_states([JobState.QUEUED])] == ["b", "c", "a"]
    _job(store, "d")  # queued after the retry: behind it
    assert [j.id for j in store.jobs_in_states([JobState.QUEUED])] == ["b", "c", "a", "d"]
    assert [j.id for j in store.list_jobs()] == ["d", "c", "b", "a"]  # the listing keeps submission order


def test_an_old_database_is_migrated_and_keeps_its_queue_order(tmp_path):
    import sqlite3

    from tunewire_server.store import SCHEMA, SCHEMA_VERSION

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)  # the schema before queue positions, at user_version 0
    for ordinal, job_id in enumerate(["x", "y"], start=1):
        db.execute("INSERT INTO jobs (id, ordinal, spec, state, created_at) VALUES (?, ?, '{}', 'QUEUED', 0)",
                   (job_id, ordinal))
    db.commit()
    db.close()
    store = Store(path)
    assert store.pragma("user_version") == SCHEMA_VERSION >= 1
    assert [(j.id, j.queue_seq) for j in store.jobs_in_states([JobState.QUEUED])] == [("x", 1), ("y", 2)]
    _job(store, "z")
    assert [j.id for j in store.jobs_in_states([JobState.QUEUED])] == ["x", "y", "z"]
    store.close()
    assert Store(path).pragma("user_version") == SCHEMA_VERSION  # a second open migrates nothing


def test_list_sizes_count_the_stored_bytes_and_follow_the_listing(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    store.create_job("small", "{}", None, ("state_change", {}))
    store.create_job("big", '{"display_name": "' + "é" * 1000 + '"}', "r", ("state_change", {}))
    (big, big_size), (small, small_size) = store.list_sizes()
    assert big_size >= 2000 + 1 > small_size  # bytes, not characters
    assert [j.id for j in store.jobs_by_ordinals([big, small])] == ["big", "small"]
    assert store.list_sizes(before_ordinal=big) == [(small, small_size)]
