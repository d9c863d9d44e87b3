"""The PostgreSQL store (store/postgres.py) against a real server started for the session (tests/support/
postgres.py): the whole Store contract of test_store.py, collected here again with `make_store` opening a
PostgresStore on a fresh database, then what PostgreSQL adds: claims, request ids and event seqs under
concurrency from many connections, migrations run once by stores starting together, and clear errors
for a wrong URL or a server that is down."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.unit import test_store as contract
from tunewire_server.jobs.states import JobState
from tunewire_server.store.postgres import (
    SCHEMA_VERSION,
    Lease,
    LeaseLost,
    PostgresStore,
    StoreConnectError,
    StoreUnavailable,
)

# The contract's tests, unchanged: they take `store` / `make_store`, which resolve to this module's fixtures.
globals().update({name: test for name, test in vars(contract).items() if name.startswith("test_")})
store = contract.store


@pytest.fixture
def make_store(postgres_url):
    """A callable opening a PostgresStore on this test's database: a second call reopens the same data."""
    opened: list[PostgresStore] = []

    def open_store() -> PostgresStore:
        opened.append(PostgresStore(postgres_url))
        return opened[-1]

    yield open_store
    for opened_store in opened:
        opened_store.close()


def _job(store: PostgresStore, job_id: str, request_id: str | None = None):
    return store.create_job(job_id, '{"base_model": "m"}', request_id, ("state_change", {"state": "QUEUED"}))


def _together(n: int, task) -> list:
    """Run task(i) for i in range(n) on n threads released at the same moment; results (or exceptions) in order."""
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        try:
            return task(i)
        except Exception as exc:  # collected: the test decides what may fail
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


# --- concurrency across connections (as across replicas) -------------------------------------------


def test_concurrent_claims_from_eight_replicas_take_each_job_exactly_once(make_store):
    replicas = [make_store() for _ in range(8)]
    for i in range(50):
        _job(replicas[0], f"j{i:02}")

    def drain(i):
        taken = []
        while (claim := replicas[i].claim_next()) is not None:
            taken.append(claim[0].id)
        return taken

    results = _together(8, drain)
    claimed = [job_id for taken in results for job_id in taken]
    assert sorted(claimed) == [f"j{i:02}" for i in range(50)] and len(claimed) == 50
    store = replicas[0]
    assert store.count_in_states([JobState.RUNNING]) == 50 and store.count_in_states([JobState.QUEUED]) == 0
    for job in store.jobs_in_states([JobState.RUNNING]):  # one claim each: one attempt, one RUNNING event
        assert job.attempts == 1 and job.last_seq == 2
        assert [e.payload["state"] for e in store.events_after(job.id, 0)] == ["QUEUED", "RUNNING"]
    for taken in results:  # each replica took the queue in its order
        assert taken == sorted(taken)


def test_concurrent_duplicate_request_ids_make_one_job(make_store):
    replicas = [make_store() for _ in range(4)]
    results = _together(8, lambda i: _job(replicas[i % 4], f"dup-{i}", "req-same"))
    made = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(made) == 1 and len(refused) == 7
    assert all(isinstance(r, psycopg.errors.UniqueViolation) for r in refused)
    winner = made[0]
    assert replicas[3].get_job_by_request_id("req-same") == winner
    assert [j.id for j in replicas[0].list_jobs()] == [winner.id] and winner.ordinal == 1
    assert _job(replicas[0], "next").ordinal == 2  # a refused insert leaves no gap in the ordinals


def test_concurrent_appends_to_one_job_keep_its_seqs_gapless(make_store):
    replicas = [make_store() for _ in range(6)]
    _job(replicas[0], "a")

    def append(i):
        return [replicas[i].append_events("a", [("train_log", {"writer": i, "n": n}, {"progress": n / 10}, None),
                                                 ("train_log", {"writer": i, "n": n, "second": True}, None, None)])
                for n in range(10)]

    results = _together(6, append)
    events = replicas[0].events_after("a", 0)
    assert [e.seq for e in events] == list(range(1, 2 + 6 * 10 * 2))
    assert replicas[0].get_job("a").last_seq == 121
    returned = sorted(e.seq for batches in results for batch in batches for e in batch)
    assert returned == list(range(2, 122))
    for batches in results:  # each batch's two events are adjacent: appended in one transaction
        for first, second in batches:
            assert second.seq == first.seq + 1 and second.payload["second"]
    counts = Counter(e.payload.get("writer") for e in events[1:])
    assert counts == {i: 20 for i in range(6)}


def test_concurrent_creates_number_jobs_and_queue_positions_without_gaps(make_store):
    replicas = [make_store() for _ in range(4)]
    _together(8, lambda i: [_job(replicas[i % 4], f"w{i}-{n}") for n in range(5)])
    jobs = replicas[0].list_jobs(limit=100)
    assert sorted(j.ordinal for j in jobs) == list(range(1, 41))
    assert sorted(j.queue_seq for j in jobs) == list(range(1, 41))


# --- migrations ------------------------------------------------------------------------------------


def test_stores_starting_together_migrate_once(postgres_url):
    results = _together(6, lambda i: PostgresStore(postgres_url))
    assert all(isinstance(r, PostgresStore) for r in results), results
    try:
        assert results[0].schema_versions() == list(range(1, SCHEMA_VERSION + 1))
        _job(results[1], "a")
        assert results[5].get_job("a").id == "a"
    finally:
        for store in results:
            if isinstance(store, PostgresStore):
                store.close()


def test_reopening_keeps_the_data_and_migrates_nothing(make_store):
    store = make_store()
    _job(store, "a")
    store.close()
    again = make_store()
    assert again.schema_versions() == list(range(1, SCHEMA_VERSION + 1)) and again.get_job("a") is not None


def test_a_database_from_a_newer_server_is_refused(postgres_url):
    PostgresStore(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreConnectError, match=r"^store: .*schema version .* newer"):
        PostgresStore(postgres_url)


# --- errors at start and when the server goes away --------------------------------------------------


@pytest.mark.parametrize("url", ["postgresql://app:s3cret word@127.0.0.1:abc/db", "nonsense s3cret"])
def test_a_malformed_url_names_the_setting_and_hides_the_password(url):
    with pytest.raises(StoreConnectError) as caught:
        PostgresStore(url)
    message = str(caught.value)
    assert message.startswith("store: not a valid PostgreSQL URL") and "s3cret" not in message


def test_an_unreachable_server_names_the_setting_and_hides_the_password(postgres_server):
    from tests.support.ports import free_port

    url = f"postgresql://app:s3cret@127.0.0.1:{free_port()}/db?connect_timeout=2"
    with pytest.raises(StoreConnectError) as caught:
        PostgresStore(url)
    message = str(caught.value)
    assert message.startswith("store: cannot connect to PostgreSQL at postgresql://app:***@127.0.0.1:")
    assert "s3cret" not in message and "refused" in message


def test_a_wrong_database_name_is_a_clear_error(postgres_server):
    with pytest.raises(StoreConnectError, match=r'^store: cannot connect .*"no_such_db" does not exist'):
        PostgresStore(postgres_server.url("no_such_db"))


def test_a_lost_server_makes_writes_unavailable_until_it_is_back(postgres_server):
    """A write while no connection can be made is StoreUnavailable (a DiskFull: the job core pauses and
    probes); the store then says it cannot write, and writes again once the server answers."""
    import asyncio

    postgres_url = postgres_server.new_database()
    store = PostgresStore(postgres_url, pool_timeout_s=1.0)
    try:
        _job(store, "a")
        with psycopg.connect(postgres_server.url(), autocommit=True) as admin:  # cut the store's connections
            admin.execute("ALTER DATABASE " + postgres_url.rsplit("/", 1)[1] + " ALLOW_CONNECTIONS false")
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                          (postgres_url.rsplit("/", 1)[1],))

        async def probe():
            return await store.write(store.probe)

        with pytest.raises(StoreUnavailable, match="cannot be reached"):
            asyncio.run(probe())
        assert store.writable is False
        with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
            admin.execute("ALTER DATABASE " + postgres_url.rsplit("/", 1)[1] + " ALLOW_CONNECTIONS true")
        for _ in range(100):  # as the job core's wait_writable does: probe again after a pause
            try:
                asyncio.run(probe())
                break
            except StoreUnavailable:
                time.sleep(0.1)
        assert store.writable is True and store.get_job("a").state == JobState.QUEUED
    finally:
        store.close()


# --- leases: claim, heartbeat, fenced writes, takeover of an expired lease --------------------------


def _states(events) -> list[str]:
    return [e.payload["state"] for e in events if e.kind == "state_change"]


def test_a_leased_claim_is_held_renewed_and_ends_with_the_job(make_store):
    store = make_store()
    _job(store, "a")
    job, _ = store.claim_next(owner="replica-1", lease_s=60)
    lease = store.lease("a")
    assert (lease.owner, lease.attempt, lease.expired) == ("replica-1", job.attempts, False)
    assert store.renew_lease(lease, "a", 120) and store.lease("a").expires_at > lease.expires_at
    assert not store.renew_lease(Lease("replica-2", lease.attempt), "a", 60)  # not the holder
    assert not store.renew_lease(Lease("replica-1", lease.attempt - 1), "a", 60)  # an older attempt
    assert store.expired_leases() == []
    store.append_event("a", "state_change", {"state": "SUCCEEDED"}, {"state": JobState.SUCCEEDED}, fence=lease)
    assert store.lease("a") is None and not store.renew_lease(lease, "a", 60)  # ended: nobody holds it
    _job(store, "b")
    store.claim_next()  # a claim without a lease (one box) holds none
    assert store.lease("b") is None and store.expired_leases() == []
    with pytest.raises(ValueError, match="owner and lease_s"):
        store.claim_next(owner="replica-1")


def test_an_expired_lease_is_taken_over_and_fences_out_its_old_holder(make_store):
    """Replica 1 claims and dies (stops renewing); replica 2 sees the expired lease, queues the job again
    with a takeover fence and claims it; replica 1, back, can no longer write events or a final state."""
    one, two = make_store(), make_store()
    _job(one, "a")
    one.claim_next(owner="replica-1", lease_s=0)  # expires at once: as if it stopped renewing
    old = one.lease("a")
    one.append_event("a", "train_log", {"step": 1}, {"progress": 0.1}, fence=old)  # expired, not taken: still its
    [abandoned] = two.expired_leases()
    assert abandoned.id == "a" and old.expired
    takeover = Lease(old.owner, abandoned.attempts, expired=True)
    two.append_event("a", "state_change", {"state": "QUEUED"}, {"state": JobState.QUEUED}, fence=takeover)
    with pytest.raises(LeaseLost):  # a second taker, late, finds it taken
        one.append_event("a", "state_change", {"state": "QUEUED"}, {"state": JobState.QUEUED}, fence=takeover)
    with pytest.raises(LeaseLost):  # queued again: the old holder is out even before anyone claims it
        one.append_event("a", "train_log", {"step": 2}, None, fence=old)
    assert one.lease("a") is None and two.expired_leases() == []
    job, _ = two.claim_next(owner="replica-2", lease_s=60)
    assert job.id == "a" and job.attempts == 2 and two.lease("a").owner == "replica-2"
    seqs_before = [e.seq for e in two.events_after("a", 0)]
    with pytest.raises(LeaseLost):
        one.append_event("a", "train_log", {"step": 2}, {"progress": 0.2}, fence=old)
    with pytest.raises(LeaseLost):
        one.append_events("a", [("state_change", {"state": "SUCCEEDED"}, {"state": JobState.SUCCEEDED}, None)],
                          fence=old)
    with pytest.raises(LeaseLost):
        one.update_job("a", fence=old, progress=1.0)
    assert not one.renew_lease(old, "a", 60)
    assert [e.seq for e in two.events_after("a", 0)] == seqs_before == [1, 2, 3, 4, 5]
    assert _states(two.events_after("a", 0)) == ["QUEUED", "RUNNING", "QUEUED", "RUNNING"]
    job = two.get_job("a")
    assert (job.state, job.progress, job.attempts) == (JobState.RUNNING, 0.1, 2)
    two.append_event("a", "train_log", {"step": 2}, None, fence=two.lease("a"))  # the new holder writes on
    assert two.get_job("a").last_seq == 6


def test_a_live_lease_cannot_be_taken_over(make_store):
    store = make_store()
    _job(store, "a")
    store.claim_next(owner="replica-1", lease_s=60)
    lease = store.lease("a")
    assert store.expired_leases() == []
    with pytest.raises(LeaseLost):
        store.append_event("a", "state_change", {"state": "QUEUED"}, {"state": JobState.QUEUED},
                           fence=Lease(lease.owner, lease.attempt, expired=True))
    assert store.get_job("a").state == JobState.RUNNING and store.get_job("a").last_seq == 2


def test_a_version_1_database_gains_leases_and_counters_and_keeps_its_jobs(postgres_url):
    from tunewire_server.store.postgres import MIGRATIONS

    with psycopg.connect(postgres_url, autocommit=True) as conn:  # as the first version left it
        conn.execute(MIGRATIONS[0])
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY,"
                     " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")
        conn.execute("INSERT INTO jobs (id, ordinal, spec, state, created_at, queue_seq, last_seq)"
                     " VALUES ('old', 1, '{}', 'QUEUED', 0, 1, 0)")
    store = PostgresStore(postgres_url)
    try:
        assert store.schema_versions() == list(range(1, SCHEMA_VERSION + 1)) and SCHEMA_VERSION >= 3
        job, _ = store.claim_next(owner="r", lease_s=60)
        assert job.id == "old" and store.lease("old").owner == "r"
    finally:
        store.close()


def test_connections_cut_by_a_server_restart_are_replaced_without_an_error(postgres_server):
    url = postgres_server.new_database()
    store = PostgresStore(url)
    try:
        _job(store, "a")
        with psycopg.connect(postgres_server.url(), autocommit=True) as admin:  # what a restart does to them
            cut = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
                                (url.rsplit("/", 1)[1],)).fetchone()[0]
        assert cut >= 1
        assert store.get_job("a").state == JobState.QUEUED  # a read checks its pooled connection first
        assert store.append_event("a", "train_log", {"step": 1}).seq == 2
        assert store.writable
    finally:
        store.close()


def test_a_write_whose_session_is_cut_before_its_commit_is_done_once_on_a_new_connection(postgres_server):
    """What a PostgreSQL restart does to a write in flight: its session ends, its transaction rolls back.
    The store runs it again on a fresh connection: the event is stored once, with the next seq."""
    import asyncio

    url = postgres_server.new_database()
    database = url.rsplit("/", 1)[1]
    store = PostgresStore(url)
    try:
        _job(store, "a")
        with psycopg.connect(url) as holder, ThreadPoolExecutor(1) as pool:
            holder.execute("SELECT 1 FROM jobs WHERE id = 'a' FOR UPDATE")  # the write waits on this row lock
            writing = pool.submit(asyncio.run, store.write(store.append_event, "a", "train_log", {"step": 1}))
            with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
                waiting = None
                for _ in range(200):
                    waiting = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND"
                                            " wait_event_type = 'Lock'", (database,)).fetchone()
                    if waiting:
                        break
                    time.sleep(0.02)
                assert waiting, "the write never waited on the row lock"
                admin.execute("SELECT pg_terminate_backend(%s)", (waiting[0],))
            time.sleep(0.2)
            holder.rollback()
            assert writing.result(timeout=30).seq == 2
        assert [(e.seq, e.kind) for e in store.events_after("a", 0)] == [(1, "state_change"), (2, "train_log")]
        assert store.writable and store.get_job("a").last_seq == 2
    finally:
        store.close()


def test_writes_notify_listeners_of_the_same_schema_with_ids_and_seqs_only(make_store, postgres_server):
    import queue

    listener, writer = make_store(), make_store()
    elsewhere = PostgresStore(postgres_server.new_schema())  # another schema: another channel
    heard: queue.Queue = queue.Queue()
    stop = listener.listen(heard.put)
    try:
        time.sleep(0.5)  # the LISTEN is in place (it starts on its own thread)
        _job(elsewhere, "other")
        _job(writer, "a")
        writer.claim_next(owner="r", lease_s=60)
        writer.append_events("a", [("train_log", {"step": 1}, None, None), ("train_log", {"step": 2}, None, None)])
        writer.append_event("a", "state_change", {"state": "QUEUED"}, {"state": JobState.QUEUED})
        got = [heard.get(timeout=10) for _ in range(6)]
    finally:
        stop()
        elsewhere.close()
    assert [(n.job_id, n.seq, n.queued) for n in got] == [
        ("a", 1, False), ("a", 0, True), ("a", 2, False), ("a", 4, False), ("a", 5, False), ("a", 0, True)]
