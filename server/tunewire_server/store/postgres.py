"""The PostgreSQL store (base.Store), shared by several replicas: psycopg 3 and a psycopg_pool pool.

The same semantics as the SQLite store (sqlite.py), method for method. Where SQLite serialises every
write with BEGIN IMMEDIATE, PostgreSQL serialises only what must be: a transaction-scoped advisory lock
orders the writes that number jobs (create_job's ordinal and queue position, a job sent to the back of
the queue), a job's row lock numbers its events (the seq is taken from jobs.last_seq in the same
transaction as the insert: no gaps, no duplicates), and claim_next takes the first queued job with
`FOR UPDATE SKIP LOCKED`, so replicas claiming at once never take the same job nor wait for each other.

Leases (base.Store): a claim may hold the job's lease (owner, attempt; expiry on the database's clock),
renewed by heartbeat (renew_lease); writes given a `fence` apply only while that lease is the job's, else
LeaseLost; a job whose lease expired is taken over by a write fenced with Lease(..., expired=True) that
queues it again (expired_leases lists them).

Notices (Store.listen): every write that stores events sends a NOTIFY with the job id and the last seq
(never the payload: NOTIFY payloads stop at 8,000 bytes), every write that queues a job one with its id,
on a channel named after the schema; each replica LISTENs on one connection of its own, delivered at commit.

Schema migrations are numbered (the `schema_version` table: one row per migration applied), each in
one transaction, under a session advisory lock: replicas starting at once migrate once.

Restarts: an idle pooled connection the server cut is replaced at checkout (check_connection); a read or
write whose session was cut before its COMMIT is run again on a new connection (writes for up to
_RETRY_S), so a restart of PostgreSQL costs the replicas a pause, not a job.

The methods are synchronous, like SQLite's: the control plane runs writes through `write` (one writer
thread per store, so this process's writes keep their order) and reads from any thread, each on a
pooled connection in autocommit mode (a read never waits for a write: MVCC).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from tunewire_server.jobs.states import JobState
from tunewire_server.store.base import (
    BACK_OF_QUEUE,
    DatasetRecord,
    DiskFull,
    Event,
    EventItem,
    JobRecord,
    Lease,
    LeaseLost,
    NewDelivery,
    Notice,
    Outbox,
    StateChanged,
    StoreUnavailable,
    T,
    UploadRecord,
    WebhookDelivery,
    dataset_from_row,
    delivery_from_row,
    job_from_row,
    started_message,
    upload_from_row,
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Lease", "LeaseLost", "PostgresStore", "StoreConnectError",
           "StoreUnavailable", "redact"]

# Migration n brings a database from version n-1 to n (`schema_version` holds the versions applied).
MIGRATIONS: list[str] = [
    # 1: the SQLite store's schema at its version 3: jobs (with queue positions and plans), events, the
    # probe row, uploaded datasets and uploads in progress. JSON is stored as text, as SQLite stores it,
    # so list_sizes counts the same bytes.
    """
    CREATE TABLE jobs (
        id          TEXT PRIMARY KEY,
        ordinal     BIGINT NOT NULL UNIQUE,
        request_id  TEXT UNIQUE,
        spec        TEXT NOT NULL,
        plan        TEXT,
        state       TEXT NOT NULL,
        error       TEXT,
        created_at  DOUBLE PRECISION NOT NULL,
        started_at  DOUBLE PRECISION,
        ended_at    DOUBLE PRECISION,
        attempts    INTEGER NOT NULL DEFAULT 0,
        last_seq    BIGINT NOT NULL DEFAULT 0,
        progress    DOUBLE PRECISION NOT NULL DEFAULT 0,
        metrics     TEXT NOT NULL DEFAULT '{}',
        queue_seq   BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_state ON jobs (state, ordinal);
    CREATE INDEX jobs_queue ON jobs (state, queue_seq, ordinal);
    CREATE TABLE events (
        job_id   TEXT NOT NULL REFERENCES jobs (id),
        seq      BIGINT NOT NULL,
        time     DOUBLE PRECISION NOT NULL,
        kind     TEXT NOT NULL,
        payload  TEXT NOT NULL,
        PRIMARY KEY (job_id, seq)
    );
    CREATE TABLE probe (id INTEGER PRIMARY KEY, at DOUBLE PRECISION NOT NULL);
    CREATE TABLE datasets (
        id          TEXT PRIMARY KEY,
        ordinal     BIGINT NOT NULL UNIQUE,
        name        TEXT NOT NULL,
        format      TEXT NOT NULL,
        size        BIGINT NOT NULL,
        sha256      TEXT NOT NULL UNIQUE,
        created_at  DOUBLE PRECISION NOT NULL,
        file_name   TEXT NOT NULL,
        report      TEXT NOT NULL
    );
    CREATE TABLE uploads (
        upload_id     TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        format        TEXT NOT NULL,
        size          BIGINT NOT NULL,
        sha256        TEXT NOT NULL,
        label_column  TEXT NOT NULL DEFAULT '',
        created_at    DOUBLE PRECISION NOT NULL
    )
    """,
    # 2: leases. The replica running a job holds it until lease_expires_at (the database's clock, so
    # replicas' clocks need not agree), renewing it by heartbeat; (lease_owner, attempts) fences its writes.
    """
    ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
    ALTER TABLE jobs ADD COLUMN lease_expires_at DOUBLE PRECISION;
    CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE lease_owner IS NOT NULL
    """,
    # 3: the highest ordinal of a deleted job, so that create_job never numbers a job with it again.
    """
    CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)
    """,
    # 4: the attempts that ended because the job was paused (PauseJob): they use up none of its retries.
    """
    ALTER TABLE jobs ADD COLUMN pauses INTEGER NOT NULL DEFAULT 0
    """,
    # 5: the webhook outbox: deliveries enqueued with the events they announce, sent and retried from here.
    # next_attempt_at is on the database's clock (a claim pushes it on by the claim's lease).
    """
    CREATE TABLE webhook_deliveries (
        id               TEXT PRIMARY KEY,
        event_id         TEXT NOT NULL,
        url              TEXT NOT NULL,
        event_type       TEXT NOT NULL,
        job_id           TEXT NOT NULL,
        body             TEXT NOT NULL,
        created_at       DOUBLE PRECISION NOT NULL,
        state            TEXT NOT NULL DEFAULT 'pending',
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  DOUBLE PRECISION NOT NULL,
        last_error       TEXT NOT NULL DEFAULT '',
        delivered_at     DOUBLE PRECISION,
        claimed_by       TEXT,
        ordinal          BIGSERIAL
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
    CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id, ordinal)
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

# Advisory lock keys (pg_advisory_lock(int, int)): tunewire's namespace, then what the lock guards.
_LOCK_SPACE = 0x74756E65  # "tune"
_LOCK_MIGRATIONS = 1
_LOCK_JOB_ORDER = 2  # ordinals and queue positions of jobs: numbered one writer at a time
_LOCK_DATASET_ORDER = 3

_BACK_SQL = "(SELECT COALESCE(MAX(queue_seq), 0) + 1 FROM jobs)"  # BACK_OF_QUEUE
_DELETED_ORDINAL = "deleted_job_ordinal"  # counters: the highest ordinal of a deleted job
# past every ordinal stored and every deleted one: an ordinal is never reused (page tokens name ordinals)
_NEXT_ORDINAL = ("(SELECT GREATEST(COALESCE((SELECT MAX(ordinal) FROM jobs), 0),"
                 f" COALESCE((SELECT value FROM counters WHERE name = '{_DELETED_ORDINAL}'), 0)) + 1)")
_NOTIFY_SQL = "SELECT pg_notify(%s, %s)"
_NOW_SQL = "extract(epoch FROM clock_timestamp())::float8"  # the database's clock, the same for every replica
# the states in which a job's lease is held (PAUSING: its worker is still writing the checkpoint)
_HELD = (JobState.RUNNING, JobState.CANCELLING, JobState.PAUSING)
_CONNECT_TIMEOUT_S = 5
_PASSWORD_PARAM = re.compile(r"(password\s*=\s*)('[^']*'|[^\s&]+)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)([^@\s]*)(@)")  # user:PASSWORD@ even in a URL urlsplit refuses
_POOL_TIMEOUT_S = 10.0
_RETRY_S = 10.0  # how long a write cut off by the server (before its COMMIT) is tried again


class _CommitUnknown(psycopg.OperationalError):
    """The connection was lost during a COMMIT: whether the transaction was applied is unknown (not retried)."""


class StoreConnectError(ValueError):
    """The `store` setting names no PostgreSQL this server can use (a malformed URL, an unreachable or
    refusing server, a schema newer than this version knows). A ValueError: a bad setting at start."""


def redact(url: str) -> str:
    """The URL (or key=value connection string) as it can be shown: any password replaced by ***."""
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        if parts.password:
            url = parts._replace(netloc=parts.netloc.replace(":" + parts.password + "@", ":***@", 1)).geturl()
    return _PASSWORD_PARAM.sub(r"\1***", url)


def _scrub(message: str, url: str) -> str:
    """The first line of an error message, with the URL's password (if any) replaced by ***."""
    password = None
    with contextlib.suppress(ValueError):
        password = urlsplit(url).password
    if password:
        message = message.replace(password, "***")
    message = _URL_PASSWORD.sub(r"\1***\3", message)
    lines = _PASSWORD_PARAM.sub(r"\1***", message).strip().splitlines()
    return lines[0] if lines else ""


def _is_unavailable(exc: BaseException) -> bool:
    """Whether a write failed because the server is out of reach (rather than for what the write did)."""
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, (pg_errors.AdminShutdown, pg_errors.CannotConnectNow, pg_errors.CrashShutdown)):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate.startswith("08")  # connection exceptions
    return isinstance(exc, psycopg.OperationalError)  # a lost connection has no SQLSTATE


def _cut_off(exc: BaseException) -> bool:
    """Whether the server cut the session before any COMMIT was sent (a restart, a failover, a terminated
    backend): the transaction was rolled back, so running it again on a new connection is safe. Not a
    PoolTimeout (it waited for a connection already) nor a connection lost during the COMMIT."""
    return (isinstance(exc, psycopg.OperationalError) and not isinstance(exc, (PoolTimeout, _CommitUnknown))
            and _is_unavailable(exc))


def _set_clause(fields: dict) -> tuple[str, list]:
    """`col = %s, ...` and its values for a job's fields, each encoded as the jobs table stores it."""
    cols, values = [], []
    for key, value in fields.items():
        if key == "state":
            value = value.value
        elif key in ("error", "metrics") and value is not None:
            value = json.dumps(value)
        if value is BACK_OF_QUEUE:
            cols.append(f"{key} = {_BACK_SQL}")
        else:
            cols.append(f"{key} = %s")
            values.append(value)
    state = fields.get("state")
    if state is not None and state not in _HELD:  # queued again or ended: nobody holds it any more
        cols += ["lease_owner = NULL", "lease_expires_at = NULL"]
    return ", ".join(cols), values


def _fence_clause(fence: Lease | None) -> tuple[str, list]:
    """` AND ...` restricting a job update to the lease `fence` (nothing without one)."""
    if fence is None:
        return "", []
    clause = " AND lease_owner = %s AND attempts = %s"
    if fence.expired:
        clause += f" AND lease_expires_at < {_NOW_SQL}"
    return clause, [fence.owner, fence.attempt]


def _parse_notice(payload: str) -> Notice | None:
    """A Notice from a NOTIFY payload: "e JOB_ID SEQ" (events stored) or "q JOB_ID" (queued)."""
    parts = payload.split(" ")
    if len(parts) == 3 and parts[0] == "e" and parts[2].isdigit():
        return Notice(parts[1], int(parts[2]))
    if len(parts) == 2 and parts[0] == "q":
        return Notice(parts[1], queued=True)
    return None





def _in(values: Sequence) -> str:
    return ", ".join(["%s"] * len(values))


class PostgresStore:
    """A base.Store in a PostgreSQL database, which several replicas may share. Thread-safe."""

    def __init__(self, url: str, *, pool_size: int = 8, pool_timeout_s: float = _POOL_TIMEOUT_S,
                 retry_s: float = _RETRY_S):
        self.url = url
        self._retry_s = retry_s
        conninfo = self._conninfo(url)
        kwargs = {"autocommit": True, "row_factory": dict_row}
        if "connect_timeout" not in conninfo:
            kwargs["connect_timeout"] = _CONNECT_TIMEOUT_S
        self._connect_kwargs = kwargs
        self._migrate()
        # check_connection: a connection lost while idle (a server restart) is replaced at checkout.
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, kwargs=kwargs, open=False,
                                    check=ConnectionPool.check_connection, timeout=pool_timeout_s,
                                    name="tunewire-store")
        self._pool.open(wait=True, timeout=pool_timeout_s)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunewire-store")
        self._closed = threading.Event()
        self.writable = True  # False from a write that failed for want of space (or of the server) to the next
        self.shared = True
        self._outbox: Outbox | None = None  # webhook deliveries enqueued with the events (set_outbox)
        schema = self._read("SELECT current_schema() AS s")[0]["s"]
        self.channel = f"tunewire_{schema}"[:63]  # NOTIFY channels are per database: one per schema

    @staticmethod
    def _conninfo(url: str) -> dict:
        try:
            return conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StoreConnectError(f"store: not a valid PostgreSQL URL ({_scrub(str(exc), url)}); expected "
                                    "postgresql://USER:PASSWORD@HOST:PORT/DATABASE") from None

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.url, **self._connect_kwargs)
        except psycopg.Error as exc:
            raise StoreConnectError(f"store: cannot connect to PostgreSQL at {redact(self.url)}: "
                                    f"{_scrub(str(exc), self.url)}") from None

    def _migrate(self) -> None:
        """Apply the migrations this database lacks, each in its own transaction, one replica at a time."""
        with self._connect() as conn:
            conn.execute("SELECT pg_advisory_lock(%s, %s)", (_LOCK_SPACE, _LOCK_MIGRATIONS))
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
                             " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
                version = conn.execute("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version").fetchone()["v"]
                if version > SCHEMA_VERSION:
                    raise StoreConnectError(f"store: the database at {redact(self.url)} has schema version "
                                            f"{version}, newer than this server's {SCHEMA_VERSION}: run a newer "
                                            "tunewire-server")
                for number in range(version + 1, SCHEMA_VERSION + 1):
                    with conn.transaction():
                        conn.execute(MIGRATIONS[number - 1])
                        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
            finally:
                if not conn.closed:
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_SPACE, _LOCK_MIGRATIONS))

    def _notify(self, conn: psycopg.Connection, job_id: str, seq: int = 0, queued: bool = False) -> None:
        """Send a Notice at this transaction's commit (PostgreSQL folds duplicates within one transaction)."""
        conn.execute(_NOTIFY_SQL, (self.channel, f"q {job_id}" if queued else f"e {job_id} {seq}"))

    def listen(self, callback: Callable[[Notice], None]) -> Callable[[], None]:
        """Call `callback(notice)` from a thread of its own, on one LISTEN connection, for each Notice sent
        by any replica's writes (this one's included); reconnects after a lost connection (notices sent
        meanwhile are lost: listeners poll as well). Returns once listening (or after the connect timeout,
        PostgreSQL being out of reach), with the function that stops listening."""
        stop, listening = threading.Event(), threading.Event()
        listen_sql = sql.SQL("LISTEN {}").format(sql.Identifier(self.channel))

        def run() -> None:
            delay = 0.1
            while not stop.is_set():
                try:
                    with psycopg.connect(self.url, **self._connect_kwargs) as conn:
                        conn.execute(listen_sql)
                        listening.set()
                        delay = 0.1
                        while not stop.is_set():
                            for note in conn.notifies(timeout=0.5):
                                notice = _parse_notice(note.payload)
                                if notice is not None:
                                    callback(notice)
                except Exception:  # lost or refused: try again after a pause (the callers poll meanwhile)
                    stop.wait(delay)
                    delay = min(delay * 2, 5.0)

        thread = threading.Thread(target=run, name="tunewire-listen", daemon=True)
        thread.start()
        listening.wait(_CONNECT_TIMEOUT_S)

        def close() -> None:
            stop.set()
            thread.join(timeout=5)
        return close

    def schema_versions(self) -> list[int]:
        """The migrations applied to this database, in order."""
        return [r["version"] for r in self._read("SELECT version FROM schema_version ORDER BY version")]

    # --- connections --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self) -> Iterator[psycopg.Connection]:
        """A pooled connection inside one transaction: committed when the block ends, rolled back if it raises.
        A connection lost during the COMMIT raises _CommitUnknown: the transaction may have been applied."""
        with self._pool.connection() as conn:
            committing = False
            try:
                with conn.transaction():
                    yield conn
                    committing = True
            except Exception as exc:
                if committing and _is_unavailable(exc):
                    raise _CommitUnknown(str(exc)) from exc
                raise

    def _read(self, sql: str, args: Sequence = ()) -> list[dict]:
        """Rows of one query; once more on a fresh connection if the server cut this one (a restart)."""
        for tries_left in (1, 0):
            try:
                with self._pool.connection() as conn:
                    return conn.execute(sql, args).fetchall()
            except psycopg.OperationalError as exc:
                if not tries_left or not _cut_off(exc):
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _lock(conn: psycopg.Connection, what: int) -> None:
        """Take a transaction-scoped advisory lock: released at commit or rollback."""
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_SPACE, what))

    async def write(self, method: Callable[..., T], *args, **kwargs) -> T:
        """Run a write method on this store's writer thread: in order, off the event loop. Raises DiskFull
        when the database's disk is full, StoreUnavailable (a DiskFull) when the server cannot be reached."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, functools.partial(self._guarded, method, *args, **kwargs))

    def _guarded(self, method: Callable[..., T], *args, **kwargs) -> T:
        deadline, delay = time.monotonic() + self._retry_s, 0.05
        while True:
            try:
                result = method(*args, **kwargs)
                break
            except Exception as exc:
                # A session the server cut before the COMMIT (a restart, a failover) rolled its transaction
                # back: the same write again, on a new connection, is the write done once. Not a PoolTimeout
                # (it waited for a connection already) nor a lost COMMIT (it may have been applied).
                if _cut_off(exc) and time.monotonic() < deadline and not self._closed.is_set():
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                self._failed(exc)
                raise
        self.writable = True
        return result

    def _failed(self, exc: Exception) -> None:
        """Raise DiskFull / StoreUnavailable for a write that failed for want of space or of the server."""
        if isinstance(exc, pg_errors.DiskFull):
            self.writable = False
            raise DiskFull(f"the database's disk is full: {_scrub(str(exc), self.url)}") from None
        if _is_unavailable(exc):
            self.writable = False
            raise StoreUnavailable(f"the store (PostgreSQL at {redact(self.url)}) cannot be reached: "
                                   f"{_scrub(str(exc), self.url) or type(exc).__name__}") from None

    def probe(self) -> None:
        """A small real write: whether the store can write again (run it through `write`)."""
        with self._tx() as conn:
            conn.execute("INSERT INTO probe (id, at) VALUES (1, %s) ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at",
                         (time.time(),))

    def close(self) -> None:
        """Finish pending writes and close the pool; a second call does nothing."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._writer.shutdown(wait=True)
        self._pool.close()

    # --- jobs -------------------------------------------------------------------------------

    def create_job(self, job_id: str, spec_json: str, request_id: str | None, first_event: tuple[str, dict],
                   plan_json: str | None = None) -> JobRecord:
        """Insert a QUEUED job and its first event in one transaction. A used request_id raises
        psycopg.errors.UniqueViolation (the unique index decides, across replicas)."""
        now = time.time()
        kind, payload = first_event
        with self._tx() as conn:
            self._lock(conn, _LOCK_JOB_ORDER)
            row = conn.execute(
                "INSERT INTO jobs (id, ordinal, request_id, spec, plan, state, created_at, last_seq, queue_seq)"
                f" VALUES (%s, {_NEXT_ORDINAL}, %s, %s, %s, %s, %s, 1, {_BACK_SQL}) RETURNING *",
                (job_id, request_id, spec_json, plan_json, JobState.QUEUED.value, now)).fetchone()
            conn.execute("INSERT INTO events (job_id, seq, time, kind, payload) VALUES (%s, 1, %s, %s, %s)",
                         (job_id, now, kind, json.dumps(payload)))
            self._notify(conn, job_id, 1)
            self._notify(conn, job_id, queued=True)
        return job_from_row(row)

    def claim_next(self, describe: Callable[[int], str] = started_message, *, owner: str | None = None,
                   lease_s: float | None = None) -> tuple[JobRecord, Event] | None:
        """The first QUEUED job in queue order, moved to RUNNING with its state_change event (base.Store).
        SKIP LOCKED: a job another transaction holds (claimed by another replica right now) is passed over.
        With `owner` and `lease_s`, the claim holds the job's lease for lease_s seconds (`lease`)."""
        if (owner is None) != (lease_s is None):
            raise ValueError("claim_next: a lease needs both its owner and lease_s")
        now = time.time()
        with self._tx() as conn:
            row = conn.execute(
                "WITH next AS (SELECT id FROM jobs WHERE state = %s ORDER BY queue_seq, ordinal LIMIT 1"
                " FOR UPDATE SKIP LOCKED)"
                # a started_at of 0 counts as unset, as in the SQLite store
                " UPDATE jobs SET state = %s, attempts = jobs.attempts + 1,"
                " started_at = COALESCE(NULLIF(jobs.started_at, 0), %s), last_seq = jobs.last_seq + 1,"
                f" lease_owner = %s, lease_expires_at = {_NOW_SQL} + %s"
                " FROM next WHERE jobs.id = next.id RETURNING jobs.*",
                (JobState.QUEUED.value, JobState.RUNNING.value, now, owner, lease_s)).fetchone()
            if row is None:
                return None
            payload = {"state": JobState.RUNNING.value, "message": describe(row["attempts"])}
            conn.execute("INSERT INTO events (job_id, seq, time, kind, payload) VALUES (%s, %s, %s, 'state_change', %s)",
                         (row["id"], row["last_seq"], now, json.dumps(payload)))
            self._notify(conn, row["id"], row["last_seq"])
        return job_from_row(row), Event(row["id"], row["last_seq"], now, "state_change", payload)

    # --- leases ----------------------------------------------------------------------------------

    def lease(self, job_id: str) -> Lease | None:
        """The lease held on the job (None if nobody holds one); `expired` says whether it has run out."""
        rows = self._read(f"SELECT lease_owner, attempts, lease_expires_at, lease_expires_at < {_NOW_SQL} AS expired"
                          " FROM jobs WHERE id = %s AND lease_owner IS NOT NULL", (job_id,))
        if not rows:
            return None
        r = rows[0]
        return Lease(r["lease_owner"], r["attempts"], r["lease_expires_at"], bool(r["expired"]))

    def renew_lease(self, lease: Lease, job_id: str, lease_s: float) -> bool:
        """Hold the job lease_s seconds more (a heartbeat); False if the lease is no longer `lease` (taken
        over, or the job left RUNNING/CANCELLING): its holder must stop writing for the job. A write method."""
        clause, args = _fence_clause(Lease(lease.owner, lease.attempt))
        with self._tx() as conn:
            return conn.execute(f"UPDATE jobs SET lease_expires_at = {_NOW_SQL} + %s WHERE id = %s{clause}",
                                (lease_s, job_id, *args)).rowcount == 1

    def expired_leases(self) -> list[JobRecord]:
        """The RUNNING, CANCELLING or PAUSING jobs whose lease ran out (their replica died or stopped renewing), in
        the queue's order: another replica takes each over with a write fenced by Lease(..., expired=True)."""
        rows = self._read(f"SELECT * FROM jobs WHERE state = ANY(%s) AND lease_expires_at < {_NOW_SQL}"
                          " ORDER BY queue_seq, ordinal", ([s.value for s in _HELD],))
        return [job_from_row(r) for r in rows]

    # --- jobs, continued -----------------------------------------------------------------------

    def get_job(self, job_id: str) -> JobRecord | None:
        rows = self._read("SELECT * FROM jobs WHERE id = %s", (job_id,))
        return job_from_row(rows[0]) if rows else None

    def get_job_by_request_id(self, request_id: str) -> JobRecord | None:
        rows = self._read("SELECT * FROM jobs WHERE request_id = %s", (request_id,))
        return job_from_row(rows[0]) if rows else None

    def list_jobs(self, states: Sequence[JobState] = (), before_ordinal: int | None = None,
                  limit: int = 50) -> list[JobRecord]:
        """Newest first."""
        where, args = self._list_filter(states, before_ordinal)
        rows = self._read(f"SELECT * FROM jobs WHERE {where} ORDER BY ordinal DESC LIMIT %s", [*args, limit])
        return [job_from_row(r) for r in rows]

    def list_sizes(self, states: Sequence[JobState] = (), before_ordinal: int | None = None,
                   limit: int = 50) -> list[tuple[int, int]]:
        """(ordinal, stored bytes of its spec, error, metrics and request id) of what `list_jobs` would
        return, newest first, without reading the records: a page can be sized before it is read."""
        size = ("octet_length(spec) + COALESCE(octet_length(error), 0) + octet_length(metrics)"
                " + COALESCE(octet_length(request_id), 0)")
        where, args = self._list_filter(states, before_ordinal)
        rows = self._read(f"SELECT ordinal, {size} AS size FROM jobs WHERE {where} ORDER BY ordinal DESC LIMIT %s",
                          [*args, limit])
        return [(r["ordinal"], r["size"]) for r in rows]

    def jobs_by_ordinals(self, ordinals: Sequence[int]) -> list[JobRecord]:
        """The jobs with these ordinals (those that exist), newest first."""
        if not ordinals:
            return []
        rows = self._read("SELECT * FROM jobs WHERE ordinal = ANY(%s) ORDER BY ordinal DESC", (list(ordinals),))
        return [job_from_row(r) for r in rows]

    @staticmethod
    def _list_filter(states: Sequence[JobState], before_ordinal: int | None) -> tuple[str, list]:
        where, args = "TRUE", []
        if states:
            where += f" AND state IN ({_in(states)})"
            args += [s.value for s in states]
        if before_ordinal is not None:
            where += " AND ordinal < %s"
            args.append(before_ordinal)
        return where, args

    def jobs_in_states(self, states: Iterable[JobState]) -> list[JobRecord]:
        """In the queue's order: by queue position (a retried job behind those queued before its retry),
        then by age."""
        values = [s.value for s in states]
        rows = self._read("SELECT * FROM jobs WHERE state = ANY(%s) ORDER BY queue_seq, ordinal", (values,))
        return [job_from_row(r) for r in rows]

    def count_in_states(self, states: Iterable[JobState]) -> int:
        values = [s.value for s in states]
        return self._read("SELECT COUNT(*) AS n FROM jobs WHERE state = ANY(%s)", (values,))[0]["n"]

    def update_job(self, job_id: str, *, fence: Lease | None = None, **fields) -> None:
        """Set job fields without an event; with `fence`, only while that lease is the job's (else LeaseLost)."""
        cols, values = _set_clause(fields)
        clause, args = _fence_clause(fence)
        with self._tx() as conn:
            if any(v is BACK_OF_QUEUE for v in fields.values()):
                self._lock(conn, _LOCK_JOB_ORDER)
            updated = conn.execute(f"UPDATE jobs SET {cols} WHERE id = %s{clause}", (*values, job_id, *args)).rowcount
            if fence is not None and updated == 0:
                raise LeaseLost(f"job {job_id}: the lease of {fence.owner} (attempt {fence.attempt}) is not held")
            if updated and fields.get("state") == JobState.QUEUED:
                self._notify(conn, job_id, queued=True)

    def delete_job(self, job_id: str) -> bool:
        """Remove the job and its events in one transaction (base.Store.delete_job)."""
        with self._tx() as conn:
            self._lock(conn, _LOCK_JOB_ORDER)  # a create numbering past it waits for the counter
            row = conn.execute("SELECT ordinal FROM jobs WHERE id = %s", (job_id,)).fetchone()
            if row is None:
                return False
            conn.execute("INSERT INTO counters (name, value) VALUES (%s, %s) ON CONFLICT (name)"
                         " DO UPDATE SET value = GREATEST(counters.value, EXCLUDED.value)",
                         (_DELETED_ORDINAL, row["ordinal"]))
            conn.execute("DELETE FROM events WHERE job_id = %s", (job_id,))
            conn.execute("DELETE FROM jobs WHERE id = %s", (job_id,))
        return True

    # --- events -----------------------------------------------------------------------------

    def append_event(self, job_id: str, kind: str, payload: dict, job_fields: dict | None = None,
                     at: float | None = None, *, fence: Lease | None = None,
                     expect_state: JobState | None = None) -> Event:
        """Store an event with the job's next seq, and optionally update the job, atomically."""
        return self.append_events(job_id, [(kind, payload, job_fields, at)], fence=fence, expect_state=expect_state)[0]

    def append_events(self, job_id: str, items: Sequence[EventItem], *, fence: Lease | None = None,
                      expect_state: JobState | None = None) -> list[Event]:
        """Store several events with the job's next seqs and apply their job fields in order, in one
        transaction. The seqs come from the job's row, updated (so locked) first: appends to one job
        from several connections queue behind each other and number on. With `fence`, only while that
        lease is the job's: else LeaseLost; with `expect_state`, only while the job is in that state: else
        StateChanged. Nothing is written when either refuses."""
        fields: dict = {}
        rows = []
        for kind, payload, job_fields, at in items:
            rows.append((kind, payload, at or time.time()))
            fields.update(job_fields or {})
        cols, values = _set_clause(fields)
        clause, args = _fence_clause(fence)
        if expect_state is not None:
            clause += " AND state = %s"
            args.append(expect_state.value)
        with self._tx() as conn:
            if any(v is BACK_OF_QUEUE for v in fields.values()):
                self._lock(conn, _LOCK_JOB_ORDER)
            found = conn.execute(f"UPDATE jobs SET last_seq = last_seq + %s{', ' + cols if cols else ''}"
                                 f" WHERE id = %s{clause} RETURNING last_seq",
                                 (len(rows), *values, job_id, *args)).fetchone()
            if found is None:
                self._refused(conn, job_id, fence, expect_state)
            first = found["last_seq"] - len(rows) + 1
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO events (job_id, seq, time, kind, payload) VALUES (%s, %s, %s, %s, %s)",
                                [(job_id, first + i, now, kind, json.dumps(payload))
                                 for i, (kind, payload, now) in enumerate(rows)])
            self._notify(conn, job_id, found["last_seq"])
            if fields.get("state") == JobState.QUEUED:
                self._notify(conn, job_id, queued=True)
            events = [Event(job_id, first + i, now, kind, payload) for i, (kind, payload, now) in enumerate(rows)]
            enqueued = self._enqueue(conn, events)
        if enqueued and self._outbox is not None:
            self._outbox.enqueued()
        return events

    @staticmethod
    def _refused(conn: psycopg.Connection, job_id: str, fence: Lease | None, expect_state: JobState | None) -> None:
        """Raise why an update of the job matched no row: LeaseLost, StateChanged or LookupError."""
        row = conn.execute("SELECT state FROM jobs WHERE id = %s", (job_id,)).fetchone()
        if row is None:
            raise LookupError(f"no job {job_id!r} in the store")
        if expect_state is not None and row["state"] != expect_state.value:
            raise StateChanged(f"job {job_id} is {row['state']}, no longer {expect_state.value}")
        assert fence is not None
        raise LeaseLost(f"job {job_id}: the lease of {fence.owner} (attempt {fence.attempt}) is not held")

    # --- webhook deliveries (base.Store: the outbox) ------------------------------------------

    def set_outbox(self, outbox: Outbox | None) -> None:
        self._outbox = outbox

    def _enqueue(self, conn: psycopg.Connection, events: Sequence[Event]) -> int:
        """Inside append_events' transaction: store the deliveries the outbox maps the events to."""
        if self._outbox is None:
            return 0
        new: list[NewDelivery] = [d for event in events for d in self._outbox.deliveries(event)]
        if not new:
            return 0
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO webhook_deliveries (id, event_id, url, event_type, job_id, body, created_at,"
                f" next_attempt_at) VALUES (%s, %s, %s, %s, %s, %s, %s, {_NOW_SQL}) ON CONFLICT (id) DO NOTHING",
                [(d.id, d.event_id, d.url, d.event_type, d.job_id, d.body, d.created_at) for d in new])
        return len(new)

    def claim_deliveries(self, owner: str, lease_s: float, limit: int) -> list[WebhookDelivery]:
        """The due pending deliveries, oldest due first, claimed by `owner` for lease_s seconds (base.Store):
        SKIP LOCKED passes over those another replica is claiming right now."""
        with self._tx() as conn:
            rows = conn.execute(
                "WITH due AS (SELECT id FROM webhook_deliveries WHERE state = 'pending'"
                f" AND next_attempt_at <= {_NOW_SQL} ORDER BY next_attempt_at, ordinal LIMIT %s"
                " FOR UPDATE SKIP LOCKED)"
                " UPDATE webhook_deliveries d SET attempts = d.attempts + 1, claimed_by = %s,"
                f" next_attempt_at = {_NOW_SQL} + %s FROM due WHERE d.id = due.id RETURNING d.*",
                (limit, owner, lease_s)).fetchall()
        return [delivery_from_row(r) for r in sorted(rows, key=lambda r: r["ordinal"])]

    def finish_delivery(self, delivery_id: str, owner: str, attempt: int, state: str, *,
                        retry_in_s: float = 0.0, error: str = "") -> bool:
        """Record a claimed attempt's result while the claim is the delivery's latest (base.Store)."""
        if state not in ("delivered", "pending", "failed"):
            raise ValueError(f"finish_delivery: unknown state {state!r}")
        with self._tx() as conn:
            return conn.execute(
                "UPDATE webhook_deliveries SET state = %s, claimed_by = NULL, last_error = %s,"
                f" next_attempt_at = {_NOW_SQL} + %s,"
                f" delivered_at = CASE WHEN %s::text = 'delivered' THEN {_NOW_SQL} ELSE delivered_at END"
                " WHERE id = %s AND claimed_by = %s AND attempts = %s AND state = 'pending'",
                (state, error, retry_in_s, state, delivery_id, owner, attempt)).rowcount == 1

    def release_deliveries(self, owner: str | None) -> int:
        """Make pending deliveries claimed by `owner` (None: anyone) due now and unclaimed (base.Store)."""
        with self._tx() as conn:
            return conn.execute(
                f"UPDATE webhook_deliveries SET claimed_by = NULL, next_attempt_at = {_NOW_SQL}"
                " WHERE state = 'pending' AND claimed_by IS NOT NULL"
                " AND (%s::text IS NULL OR claimed_by = %s::text)", (owner, owner)).rowcount

    def list_deliveries(self, job_id: str | None = None, limit: int = 1000) -> list[WebhookDelivery]:
        """In the order they were enqueued."""
        rows = self._read("SELECT * FROM webhook_deliveries WHERE %s::text IS NULL OR job_id = %s::text"
                          " ORDER BY ordinal LIMIT %s", (job_id, job_id, limit))
        return [delivery_from_row(r) for r in rows]

    def events_after(self, job_id: str, after_seq: int, limit: int = 1000) -> list[Event]:
        rows = self._read("SELECT seq, time, kind, payload FROM events WHERE job_id = %s AND seq > %s"
                          " ORDER BY seq LIMIT %s", (job_id, after_seq, limit))
        return [Event(job_id, r["seq"], r["time"], r["kind"], json.loads(r["payload"])) for r in rows]

    # --- uploads and datasets ---------------------------------------------------------------

    def begin_upload(self, upload: UploadRecord) -> UploadRecord:
        """Insert the upload unless its id is stored; return the stored one."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO uploads (upload_id, name, format, size, sha256, label_column, created_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (upload_id) DO NOTHING",
                (upload.upload_id, upload.name, upload.format, upload.size, upload.sha256, upload.label_column,
                 upload.created_at or time.time()))
            row = conn.execute("SELECT * FROM uploads WHERE upload_id = %s", (upload.upload_id,)).fetchone()
        return upload_from_row(row)

    def get_upload(self, upload_id: str) -> UploadRecord | None:
        rows = self._read("SELECT * FROM uploads WHERE upload_id = %s", (upload_id,))
        return upload_from_row(rows[0]) if rows else None

    def delete_upload(self, upload_id: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM uploads WHERE upload_id = %s", (upload_id,))

    def add_dataset(self, dataset_id: str, name: str, fmt: str, size: int, sha256: str, file_name: str,
                    report_json: str, upload_id: str | None = None) -> DatasetRecord:
        """Insert the dataset unless its id is stored, and forget the upload, in one transaction."""
        with self._tx() as conn:
            self._lock(conn, _LOCK_DATASET_ORDER)  # numbers datasets one at a time; a concurrent twin waits
            conn.execute(
                "INSERT INTO datasets (id, ordinal, name, format, size, sha256, created_at, file_name, report)"
                " VALUES (%s, (SELECT COALESCE(MAX(ordinal), 0) + 1 FROM datasets), %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                (dataset_id, name, fmt, size, sha256, time.time(), file_name, report_json))
            if upload_id is not None:
                conn.execute("DELETE FROM uploads WHERE upload_id = %s", (upload_id,))
            row = conn.execute("SELECT * FROM datasets WHERE id = %s", (dataset_id,)).fetchone()
        return dataset_from_row(row)

    def get_dataset(self, dataset_id: str) -> DatasetRecord | None:
        rows = self._read("SELECT * FROM datasets WHERE id = %s", (dataset_id,))
        return dataset_from_row(rows[0]) if rows else None

    def list_datasets(self, before_ordinal: int | None = None, limit: int = 50) -> list[DatasetRecord]:
        """Newest first."""
        where, args = ("ordinal < %s", [before_ordinal]) if before_ordinal is not None else ("TRUE", [])
        rows = self._read(f"SELECT * FROM datasets WHERE {where} ORDER BY ordinal DESC LIMIT %s", [*args, limit])
        return [dataset_from_row(r) for r in rows]

    def delete_dataset(self, dataset_id: str) -> bool:
        with self._tx() as conn:
            return conn.execute("DELETE FROM datasets WHERE id = %s", (dataset_id,)).rowcount > 0
