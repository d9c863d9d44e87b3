"""The webhook outbox in both stores (Store.set_outbox, claim_deliveries, finish_delivery,
release_deliveries, list_deliveries): deliveries commit with their events or not at all, a claim holds a
delivery for its lease, results are fenced by the claim, and with PostgreSQL two stores (replicas) never
claim the same delivery."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tunewire_server.jobs.states import JobState
from tunewire_server.store import SQLiteStore, StateChanged
from tunewire_server.webhooks.payloads import WebhookOutbox


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request, tmp_path):
    opened = []

    if request.param == "postgres":
        from tunewire_server.store.postgres import PostgresStore
        url = request.getfixturevalue("postgres_url")

        def open_store():
            opened.append(PostgresStore(url))
            return opened[-1]
    else:
        def open_store():
            opened.append(SQLiteStore(tmp_path / "db.sqlite"))
            return opened[-1]
    yield open_store
    for store in opened:
        store.close()


class Pokes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def _job(store, job_id="job-1"):
    store.create_job(job_id, '{"base_model": "m"}', None, ("state_change", {"state": "QUEUED"}))


def _outboxed(make_store, urls=("http://a/h",)):
    store = make_store()
    pokes = Pokes()
    store.set_outbox(WebhookOutbox(list(urls), pokes))
    return store, pokes


def test_deliveries_are_enqueued_with_the_events_that_announce_them(make_store):
    store, pokes = _outboxed(make_store, ("http://a/h", "http://b/h"))
    _job(store)
    store.append_event("job-1", "train_log", {"step": 1})
    assert store.list_deliveries() == [] and pokes.count == 0
    store.append_events("job-1", [("checkpoint_saved", {"step": 1, "name": "checkpoint-1"}, None, None),
                                  ("state_change", {"state": "CANCELLED"}, {"state": JobState.CANCELLED}, None)])
    deliveries = store.list_deliveries("job-1")
    assert [(d.event_type, d.url) for d in deliveries] == [
        ("tunewire.checkpoint.saved", "http://a/h"), ("tunewire.checkpoint.saved", "http://b/h"),
        ("fine_tuning.job.cancelled", "http://a/h"), ("fine_tuning.job.cancelled", "http://b/h")]
    assert all(d.state == "pending" and d.attempts == 0 for d in deliveries)
    assert json.loads(deliveries[2].body)["data"] == {"id": "job-1"} and pokes.count == 1
    assert store.list_deliveries("job-2") == []


def test_a_refused_append_enqueues_nothing(make_store):
    store, _ = _outboxed(make_store)
    _job(store)
    with pytest.raises(StateChanged):
        store.append_event("job-1", "state_change", {"state": "SUCCEEDED"}, {"state": JobState.SUCCEEDED},
                           expect_state=JobState.RUNNING)
    assert store.list_deliveries() == []


def test_a_claim_holds_a_delivery_for_its_lease_and_fences_its_result(make_store):
    store, _ = _outboxed(make_store)
    _job(store)
    store.append_event("job-1", "state_change", {"state": "CANCELLED"}, {"state": JobState.CANCELLED})
    (claimed,) = store.claim_deliveries("r1", 30.0, 10)
    assert claimed.attempts == 1 and claimed.claimed_by == "r1"
    assert store.claim_deliveries("r2", 30.0, 10) == []  # held by r1's claim
    assert not store.finish_delivery(claimed.id, "r2", 1, "delivered")  # not r2's claim
    assert store.finish_delivery(claimed.id, "r1", 1, "pending", retry_in_s=0.0, error="HTTP 500")
    assert not store.finish_delivery(claimed.id, "r1", 1, "delivered")  # that claim is over
    (again,) = store.claim_deliveries("r2", 30.0, 10)
    assert again.attempts == 2 and again.last_error == "HTTP 500"
    assert store.finish_delivery(again.id, "r2", 2, "delivered")
    (done,) = store.list_deliveries()
    assert done.state == "delivered" and done.delivered_at is not None and done.claimed_by is None
    assert store.claim_deliveries("r1", 0.0, 10) == []


def test_a_retry_waits_and_released_claims_are_due_at_once(make_store):
    store, _ = _outboxed(make_store)
    _job(store)
    store.append_event("job-1", "state_change", {"state": "CANCELLED"}, {"state": JobState.CANCELLED})
    (claimed,) = store.claim_deliveries("r1", 0.0, 10)
    store.finish_delivery(claimed.id, "r1", 1, "pending", retry_in_s=3600.0)
    assert store.claim_deliveries("r1", 30.0, 10) == []  # not due for an hour
    store.release_deliveries(None)  # nothing claimed: nothing changes
    assert store.claim_deliveries("r1", 30.0, 10) == []
    store2, _ = _outboxed(make_store)
    _job(store2, "job-2")
    store2.append_event("job-2", "state_change", {"state": "CANCELLED"}, {"state": JobState.CANCELLED})
    (held,) = store2.claim_deliveries("r1", 3600.0, 10)
    assert store2.release_deliveries("r2") == 0 and store2.release_deliveries("r1") == 1
    (due,) = store2.claim_deliveries("r2", 30.0, 10)
    assert due.id == held.id and due.attempts == 2


def test_a_given_up_delivery_is_never_claimed_again(make_store):
    store, _ = _outboxed(make_store)
    _job(store)
    store.append_event("job-1", "state_change", {"state": "CANCELLED"}, {"state": JobState.CANCELLED})
    (claimed,) = store.claim_deliveries("r1", 0.0, 10)
    assert store.finish_delivery(claimed.id, "r1", 1, "failed", error="HTTP 500")
    assert store.list_deliveries()[0].state == "failed"
    store.release_deliveries(None)
    assert store.claim_deliveries("r1", 0.0, 10) == []


def test_deliveries_survive_reopening_the_store(make_store):
    store, _ = _outboxed(make_store)
    _job(store)
    store.append_event("job-1", "state_change", {"state": "CANCELLED"}, {"state": JobState.CANCELLED})
    store.close()
    reopened = make_store()
    (delivery,) = reopened.list_deliveries()
    assert delivery.state == "pending" and delivery.event_type == "fine_tuning.job.cancelled"


def test_replicas_claiming_at_once_never_take_the_same_delivery(make_store, request):
    if "postgres" not in request.node.name:
        pytest.skip("one process per SQLite file")
    stores = [_outboxed(make_store)[0] for _ in range(4)]
    for i in range(20):
        _job(stores[0], f"job-{i}")
        stores[0].append_event(f"job-{i}", "state_change", {"state": "CANCELLED"}, {"state": JobState.CANCELLED})
    time.sleep(0.01)  # enqueued on the database's clock: due from now on

    def claim_all(index):
        got = []
        while batch := stores[index].claim_deliveries(f"r{index}", 60.0, 3):
            got += [d.id for d in batch]
        return got

    with ThreadPoolExecutor(4) as pool:
        claims = [d for got in pool.map(claim_all, range(4)) for d in got]
    assert len(claims) == len(set(claims)) == 20


def test_a_sqlite_database_from_before_the_outbox_gains_it_and_keeps_its_jobs(tmp_path):
    import sqlite3

    from tunewire_server.store.sqlite import MIGRATIONS, SCHEMA, SCHEMA_VERSION

    path = tmp_path / "v4.sqlite"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.executescript(";".join(MIGRATIONS[:4]) + "; PRAGMA user_version = 4;")  # as issue 16's server left it
    db.execute("INSERT INTO jobs (id, ordinal, spec, state, created_at, queue_seq, last_seq)"
               " VALUES ('old', 1, '{}', 'RUNNING', 0, 1, 1)")
    db.commit()
    db.close()
    store = SQLiteStore(path)
    try:
        assert store.pragma("user_version") == SCHEMA_VERSION >= 5
        store.set_outbox(WebhookOutbox(["http://a/h"]))
        store.append_event("old", "state_change", {"state": "SUCCEEDED"}, {"state": JobState.SUCCEEDED})
        assert [d.event_type for d in store.list_deliveries("old")] == ["fine_tuning.job.succeeded"]
    finally:
        store.close()
