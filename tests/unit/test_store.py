"""The Store contract (store/base.py): every implementation passes these. The `make_store` fixture opens
(or reopens) one store per test; a PostgreSQL store adds its param here. SQLite's own behaviour (its
pragmas, schema migrations, a full disk) is in test_store_sqlite.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from tunewire_server.jobs.states import JobState
from tunewire_server.store import BACK_OF_QUEUE, SQLiteStore, Store, UploadRecord


@pytest.fixture(params=["sqlite"])
def make_store(request, tmp_path):
    """A callable opening the test's store: a second call reopens the same data (after close())."""
    opened: list[Store] = []

    def open_store() -> Store:
        store = SQLiteStore(tmp_path / "db.sqlite")
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()  # a second close (the test closed it) does nothing


@pytest.fixture
def store(make_store) -> Store:
    return make_store()


def _job(store: Store, job_id: str, request_id: str | None = None, plan: dict | None = None):
    return store.create_job(job_id, '{"base_model": "m"}', request_id, ("state_change", {"state": "QUEUED"}),
                            json.dumps(plan) if plan is not None else None)


def _queued(store: Store) -> list[str]:
    return [j.id for j in store.jobs_in_states([JobState.QUEUED])]


# --- create, get, idempotency keys ---------------------------------------------------------------


def test_job_is_durable_with_its_first_event(make_store):
    store = make_store()
    job = _job(store, "job-a", "req-1")
    assert job.state == JobState.QUEUED and job.last_seq == 1
    store.close()
    reopened = make_store()
    assert reopened.get_job("job-a").spec_json == '{"base_model": "m"}'
    assert reopened.get_job_by_request_id("req-1").id == "job-a"
    assert [e.seq for e in reopened.events_after("job-a", 0)] == [1]


def test_a_new_job_is_queued_with_its_fields(store):
    job = _job(store, "a", "req-a")
    assert (job.id, job.request_id, job.state, job.attempts, job.progress, job.metrics, job.error) == \
        ("a", "req-a", JobState.QUEUED, 0, 0.0, {}, None)
    assert job.started_at is None and job.ended_at is None and job.created_at > 0 and not job.terminal
    [first] = store.events_after("a", 0)
    assert (first.job_id, first.seq, first.kind, first.payload) == ("a", 1, "state_change", {"state": "QUEUED"})
    assert [_job(store, n).ordinal for n in ("b", "c")] == [job.ordinal + 1, job.ordinal + 2]


def test_unknown_ids_and_request_ids_find_nothing(store):
    _job(store, "a", "req-a")
    assert store.get_job("nope") is None and store.get_job_by_request_id("req-nope") is None
    assert store.events_after("nope", 0) == []


def test_a_request_id_names_one_job_only(store):
    _job(store, "a", "req-1")
    _job(store, "b")
    _job(store, "c")  # no request id: any number of jobs may have none
    with pytest.raises(Exception):  # noqa: B017 - the implementation's own integrity error
        _job(store, "d", "req-1")
    assert store.get_job("d") is None and store.get_job_by_request_id("req-1").id == "a"
    assert store.events_after("d", 0) == [] and store.count_in_states([JobState.QUEUED]) == 3


def test_the_plan_is_stored_with_the_job(make_store):
    store = make_store()
    plan = {"task": "classification", "labels": ["neg", "pos"], "hyperparameters": {"learning_rate": 5e-5}}
    _job(store, "a", plan=plan)
    _job(store, "b")
    assert store.get_job("a").plan == plan and store.get_job("b").plan is None
    store.close()
    reopened = make_store()
    assert reopened.get_job("a").plan == plan
    assert [j.plan for j in reopened.jobs_in_states([JobState.QUEUED])] == [plan, None]


def test_writes_run_through_write_off_the_event_loop(store):
    async def main():
        job = await store.write(store.create_job, "a", "{}", None, ("state_change", {}))
        event = await store.write(store.append_event, "a", "train_log", {"step": 1})
        return job, event

    job, event = asyncio.run(main())
    assert job.id == "a" and event.seq == 2 and store.writable
    store.probe()  # a probe is a write that succeeds while the disk has room


# --- events ------------------------------------------------------------------------------------


def test_event_seqs_are_gapless_per_job_and_update_the_job(store):
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


def test_events_appended_together_take_the_next_seqs_and_apply_their_fields_in_order(store):
    _job(store, "a")
    events = store.append_events("a", [("train_log", {"step": 1}, {"progress": 0.1}, 100.0),
                                       ("eval_result", {"metrics": {"f1": 0.5}}, {"metrics": {"f1": 0.5}}, None),
                                       ("train_log", {"step": 2}, {"progress": 0.2}, 101.0)])
    assert [(e.seq, e.kind) for e in events] == [(2, "train_log"), (3, "eval_result"), (4, "train_log")]
    assert events[0].time == 100.0 and events[1].time > 101.0  # no time given: now
    stored = store.events_after("a", 1)
    assert [(e.seq, e.kind, e.payload, e.time) for e in stored] == [(e.seq, e.kind, e.payload, e.time) for e in events]
    job = store.get_job("a")
    assert (job.last_seq, job.progress, job.metrics) == (4, 0.2, {"f1": 0.5})


def test_events_after_pages_by_limit(store):
    _job(store, "a")
    store.append_events("a", [("train_log", {"step": i}, None, None) for i in range(9)])
    assert [e.seq for e in store.events_after("a", 0, limit=4)] == [1, 2, 3, 4]
    assert [e.seq for e in store.events_after("a", 4, limit=4)] == [5, 6, 7, 8]
    assert [e.seq for e in store.events_after("a", 8, limit=4)] == [9, 10]
    assert store.events_after("a", 10) == [] and store.events_after("a", 2**63 - 1) == []


# --- transitions and fields ------------------------------------------------------------------


def test_state_changes_set_the_job_fields_they_carry(store):
    _job(store, "a")
    store.append_event("a", "state_change", {"state": "RUNNING"},
                       {"state": JobState.RUNNING, "attempts": 1, "started_at": 50.0})
    store.append_event("a", "state_change", {"state": "QUEUED"},
                       {"state": JobState.QUEUED, "error": {"code": "X", "message": "m"}})
    job = store.get_job("a")
    assert (job.state, job.attempts, job.started_at, job.error) == (JobState.QUEUED, 1, 50.0, {"code": "X", "message": "m"})
    store.append_event("a", "state_change", {"state": "SUCCEEDED"},
                       {"state": JobState.SUCCEEDED, "error": None, "ended_at": 60.0, "progress": 1.0,
                        "metrics": {"accuracy": 0.9}})
    job = store.get_job("a")
    assert (job.state, job.error, job.ended_at, job.progress, job.metrics) == \
        (JobState.SUCCEEDED, None, 60.0, 1.0, {"accuracy": 0.9})
    assert job.terminal and job.last_seq == 4
    store.update_job("a", progress=0.5)  # a field set without an event
    assert store.get_job("a").progress == 0.5 and store.get_job("a").last_seq == 4


def test_counts_and_queries_by_state(store):
    for name in ("a", "b", "c", "d"):
        _job(store, name)
    store.update_job("b", state=JobState.RUNNING)
    store.update_job("c", state=JobState.CANCELLING)
    store.update_job("d", state=JobState.FAILED)
    assert store.count_in_states([JobState.QUEUED]) == 1
    assert store.count_in_states([JobState.RUNNING, JobState.CANCELLING]) == 2
    assert [j.id for j in store.jobs_in_states([JobState.RUNNING, JobState.CANCELLING])] == ["b", "c"]
    assert store.count_in_states([JobState.SUCCEEDED]) == 0


# --- the queue and claims ------------------------------------------------------------------


def test_a_retried_job_goes_behind_the_jobs_queued_before_its_retry(store):
    for name in ("a", "b", "c"):
        _job(store, name)
    store.append_event("a", "state_change", {"state": "RUNNING"}, {"state": JobState.RUNNING})
    store.append_event("a", "state_change", {"state": "QUEUED"}, {"state": JobState.QUEUED, "queue_seq": BACK_OF_QUEUE})
    assert _queued(store) == ["b", "c", "a"]
    _job(store, "d")  # queued after the retry: behind it
    assert _queued(store) == ["b", "c", "a", "d"]
    assert [j.id for j in store.list_jobs()] == ["d", "c", "b", "a"]  # the listing keeps submission order


def test_claim_next_takes_the_queue_in_order_and_starts_the_job(store):
    for name in ("a", "b", "c"):
        _job(store, name)
    store.update_job("b", state=JobState.CANCELLED)  # only QUEUED jobs are claimed
    job, event = store.claim_next()
    assert job.id == "a" and job.state == JobState.RUNNING and job.attempts == 1 and job.started_at > 0
    assert (event.job_id, event.seq, event.kind, event.payload) == \
        ("a", 2, "state_change", {"state": "RUNNING", "message": "started"})
    assert store.events_after("a", 1) == [event] and job.last_seq == 2
    assert store.claim_next()[0].id == "c"
    assert store.claim_next() is None and _queued(store) == []


def test_a_retry_is_claimed_after_the_jobs_queued_before_it_and_keeps_its_start(store):
    for name in ("a", "b"):
        _job(store, name)
    first, _ = store.claim_next()
    store.append_event("a", "state_change", {"state": "QUEUED"}, {"state": JobState.QUEUED, "queue_seq": BACK_OF_QUEUE})
    _job(store, "c")
    assert store.claim_next()[0].id == "b"
    job, event = store.claim_next(lambda attempt: f"try {attempt}")
    assert job.id == "a" and job.attempts == 2 and job.started_at == first.started_at
    assert event.payload == {"state": "RUNNING", "message": "try 2"} and event.seq == 4
    assert store.claim_next()[0].id == "c"


def test_claims_through_write_never_take_one_job_twice(store):
    for i in range(6):
        _job(store, f"j{i}")

    async def main():
        return await asyncio.gather(*(store.write(store.claim_next) for _ in range(8)))

    claims = asyncio.run(main())
    taken = [c[0].id for c in claims if c is not None]
    assert taken == [f"j{i}" for i in range(6)] and claims[6:] == [None, None]
    assert store.count_in_states([JobState.RUNNING]) == 6


# --- listing ---------------------------------------------------------------------------------


def test_list_is_newest_first_and_pages(store):
    for i in range(5):
        _job(store, f"j{i}")
    store.update_job("j1", state=JobState.RUNNING)
    page = store.list_jobs(limit=2)
    assert [j.id for j in page] == ["j4", "j3"]
    assert [j.id for j in store.list_jobs(before_ordinal=page[-1].ordinal, limit=10)] == ["j2", "j1", "j0"]
    assert [j.id for j in store.list_jobs([JobState.RUNNING])] == ["j1"]
    assert _queued(store) == ["j0", "j2", "j3", "j4"]  # FIFO


# --- deletion ----------------------------------------------------------------------------------


def test_delete_job_removes_its_record_events_and_request_id_durably(make_store):
    store = make_store()
    _job(store, "gone", "req-gone")
    store.append_event("gone", "train_log", {"step": 1, "loss": 1.0})
    _job(store, "kept", "req-kept")
    store.update_job("gone", state=JobState.SUCCEEDED)
    assert asyncio.run(store.write(store.delete_job, "gone")) is True
    store.close()
    store = make_store()
    assert store.get_job("gone") is None and store.get_job_by_request_id("req-gone") is None
    assert store.events_after("gone", 0) == []
    assert [j.id for j in store.list_jobs()] == ["kept"] and store.count_in_states([JobState.SUCCEEDED]) == 0
    assert [e.seq for e in store.events_after("kept", 0)] == [1]  # another job's events stay
    again = _job(store, "new", "req-gone")  # the request id is free again
    assert store.get_job_by_request_id("req-gone").id == again.id == "new"


def test_delete_job_of_an_unknown_or_deleted_id_is_false(store):
    _job(store, "a")
    assert store.delete_job("nope") is False
    assert store.delete_job("a") is True
    assert store.delete_job("a") is False


def test_a_deleted_jobs_ordinal_is_never_given_again(make_store):
    store = make_store()
    _job(store, "j1")
    newest = _job(store, "j2")
    store.delete_job("j2")
    store.close()
    store = make_store()  # the numbering survives a restart
    later = _job(store, "j3")
    assert later.ordinal > newest.ordinal
    assert [j.id for j in store.list_jobs()] == ["j3", "j1"]
    assert [j.id for j in store.list_jobs(before_ordinal=later.ordinal)] == ["j1"]


def test_list_sizes_count_the_stored_bytes_and_follow_the_listing(store):
    store.create_job("small", "{}", None, ("state_change", {}))
    store.create_job("big", '{"display_name": "' + "é" * 1000 + '"}', "r", ("state_change", {}))
    (big, big_size), (small, small_size) = store.list_sizes()
    assert big_size >= 2000 + 1 > small_size  # bytes, not characters
    assert [j.id for j in store.jobs_by_ordinals([big, small])] == ["big", "small"]
    assert store.list_sizes(before_ordinal=big) == [(small, small_size)]


def test_list_sizes_filter_like_the_listing(store):
    for i in range(6):
        _job(store, f"j{i}", plan={"big": "x" * 5000} if i == 2 else None)
    store.update_job("j3", state=JobState.FAILED, error={"code": "E", "message": "m" * 100})
    sizes = store.list_sizes([JobState.QUEUED], before_ordinal=store.get_job("j5").ordinal, limit=3)
    assert [o for o, _ in sizes] == [j.ordinal for j in store.list_jobs([JobState.QUEUED],
                                                                        store.get_job("j5").ordinal, 3)]
    assert [j.id for j in store.jobs_by_ordinals([o for o, _ in sizes])] == ["j4", "j2", "j1"]
    assert len({size for _, size in sizes}) == 1  # the plan is not sent in a listing: not counted
    assert store.jobs_by_ordinals([]) == [] and store.jobs_by_ordinals([10**6]) == []
    [(_, failed_size)] = store.list_sizes([JobState.FAILED])
    assert failed_size > sizes[0][1] + 100


# --- uploads and datasets ------------------------------------------------------------------------


def _upload(upload_id: str = "up-1", sha: str = "a" * 64, size: int = 10) -> UploadRecord:
    return UploadRecord(upload_id, "train.jsonl", "jsonl", size, sha, "label", 123.0)


def _dataset(store: Store, sha: str, upload_id: str | None = None, name: str = "train.jsonl"):
    return store.add_dataset("ds-" + sha, name, "jsonl", 10, sha, f"{sha}.jsonl", '{"num_rows": 1}', upload_id)


def test_an_upload_is_durable_and_begun_once(make_store):
    store = make_store()
    assert store.get_upload("up-1") is None
    assert store.begin_upload(_upload()) == _upload()
    assert store.begin_upload(_upload(size=99)).size == 10  # the stored one stays; the caller compares
    store.close()
    reopened = make_store()
    assert reopened.get_upload("up-1") == _upload()
    reopened.delete_upload("up-1")
    reopened.delete_upload("up-1")  # nothing to forget is not an error
    assert reopened.get_upload("up-1") is None


def test_a_dataset_is_stored_once_per_id_and_ends_its_upload(make_store):
    store = make_store()
    store.begin_upload(_upload())
    first = _dataset(store, "a" * 64, "up-1")
    assert (first.id, first.name, first.format, first.size, first.sha256, first.file_name, first.report) == \
        ("ds-" + "a" * 64, "train.jsonl", "jsonl", 10, "a" * 64, "a" * 64 + ".jsonl", {"num_rows": 1})
    assert first.created_at > 0 and store.get_upload("up-1") is None
    store.begin_upload(_upload("up-2"))
    again = _dataset(store, "a" * 64, "up-2", name="other.jsonl")
    assert again == first and store.get_upload("up-2") is None  # kept as it was; the second upload ends too
    store.close()
    assert make_store().get_dataset(first.id) == first


def test_datasets_list_newest_first_in_pages_and_delete(store):
    records = [_dataset(store, c * 64) for c in "abcde"]
    assert [r.ordinal for r in records] == [1, 2, 3, 4, 5]
    assert store.list_datasets(limit=2) == records[::-1][:2]
    assert store.list_datasets(before_ordinal=4, limit=10) == records[:3][::-1]
    assert store.delete_dataset(records[1].id) is True
    assert store.delete_dataset(records[1].id) is False
    assert store.get_dataset(records[1].id) is None and store.get_dataset("ds-nope") is None
    assert [r.id for r in store.list_datasets()] == [r.id for r in records[::-1] if r is not records[1]]
    assert _dataset(store, "f" * 64).ordinal == 6  # the next after the newest
