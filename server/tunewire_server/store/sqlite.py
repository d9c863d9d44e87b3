"""The SQLite store (base.Store): WAL mode with synchronous=FULL.

Every write is committed before the call returns, so a job the client has been told about survives
a crash of the server. The spec is stored as its protobuf JSON; events as JSON payloads. A write that
fails for want of disk space raises DiskFull (and the store reports itself not writable until a write
succeeds again); the database stays as it was before that write.

Leases (base.Store): one process owns the file, so the leases it grants live in its memory and never
expire while it lives; a job a previous process left RUNNING, CANCELLING or PAUSING holds no lease of this one,
so it counts as expired (the start's recovery takes it over). Fences are checked against that memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
    T,
    UploadRecord,
    WebhookDelivery,
    dataset_from_row,
    delivery_from_row,
    is_disk_full,
    job_from_row,
    started_message,
    upload_from_row,
)

# The first schema; MIGRATIONS bring any database, new or old, to SCHEMA_VERSION (PRAGMA user_version).
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT PRIMARY KEY,
    ordinal     INTEGER NOT NULL UNIQUE,
    request_id  TEXT UNIQUE,
    spec        TEXT NOT NULL,
    state       TEXT NOT NULL,
    error       TEXT,
    created_at  REAL NOT NULL,
    started_at  REAL,
    ended_at    REAL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_seq    INTEGER NOT NULL DEFAULT 0,
    progress    REAL NOT NULL DEFAULT 0,
    metrics     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, ordinal);
CREATE TABLE IF NOT EXISTS events (
    job_id   TEXT NOT NULL REFERENCES jobs(id),
    seq      INTEGER NOT NULL,
    time     REAL NOT NULL,
    kind     TEXT NOT NULL,
    payload  TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
"""

MIGRATIONS: list[str] = [
    # 1: the queue's order apart from the listing's: a job re-queued for a retry goes to the back.
    """
    ALTER TABLE jobs ADD COLUMN queue_seq INTEGER NOT NULL DEFAULT 0;
    UPDATE jobs SET queue_seq = ordinal;
    CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(state, queue_seq, ordinal);
    CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at REAL NOT NULL);
    """,
    # 2: the plan is stored with its job (before, in jobs/<id>/plan.json: those jobs keep a NULL plan).
    """
    ALTER TABLE jobs ADD COLUMN plan TEXT;
    """,
    # 3: uploaded datasets (metadata; the files live under the upload dir) and uploads in progress.
    """
    CREATE TABLE IF NOT EXISTS datasets (
        id          TEXT PRIMARY KEY,
        ordinal     INTEGER NOT NULL UNIQUE,
        name        TEXT NOT NULL,
        format      TEXT NOT NULL,
        size        INTEGER NOT NULL,
        sha256      TEXT NOT NULL UNIQUE,
        created_at  REAL NOT NULL,
        file_name   TEXT NOT NULL,
        report      TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS uploads (
        upload_id     TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        format        TEXT NOT NULL,
        size          INTEGER NOT NULL,
        sha256        TEXT NOT NULL,
        label_column  TEXT NOT NULL DEFAULT '',
        created_at    REAL NOT NULL
    );
    """,
    # 4: the highest ordinal of a deleted job, so that create_job never numbers a job with it again.
    """
    CREATE TABLE IF NOT EXISTS counters (
        name   TEXT PRIMARY KEY,
        value  INTEGER NOT NULL
    );
    """,
    # 5: the attempts that ended because the job was paused (PauseJob): they use up none of its retries.
    """
    ALTER TABLE jobs ADD COLUMN pauses INTEGER NOT NULL DEFAULT 0;
    """,
    # 6: the webhook outbox: deliveries enqueued with the events they announce, sent and retried from here.
    """
    CREATE TABLE IF NOT EXISTS webhook_deliveries (
        id               TEXT PRIMARY KEY,
        event_id         TEXT NOT NULL,
        url              TEXT NOT NULL,
        event_type       TEXT NOT NULL,
        job_id           TEXT NOT NULL,
        body             TEXT NOT NULL,
        created_at       REAL NOT NULL,
        state            TEXT NOT NULL DEFAULT 'pending',
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  REAL NOT NULL,
        last_error       TEXT NOT NULL DEFAULT '',
        delivered_at     REAL,
        claimed_by       TEXT,
        ordinal          INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries(state, next_attempt_at);
    CREATE INDEX IF NOT EXISTS webhook_deliveries_job ON webhook_deliveries(job_id, ordinal);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

_BACK_SQL = "(SELECT COALESCE(MAX(queue_seq), 0) + 1 FROM jobs)"  # BACK_OF_QUEUE

_DELETED_ORDINAL = "deleted_job_ordinal"  # counters: the highest ordinal of a deleted job
# past every ordinal stored and every deleted one: an ordinal is never reused (page tokens name ordinals)
_NEXT_ORDINAL = ("SELECT MAX(COALESCE((SELECT MAX(ordinal) FROM jobs), 0),"
                 f" COALESCE((SELECT value FROM counters WHERE name = '{_DELETED_ORDINAL}'), 0)) + 1")

SQLITE_FULL = 13
# the states in which a job's lease is held (PAUSING: its worker is still writing the checkpoint)
_HELD = (JobState.RUNNING, JobState.CANCELLING, JobState.PAUSING)


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == SQLITE_FULL:
        return True
    return is_disk_full(exc)


def _set_clause(fields: dict) -> tuple[str, list]:
    """`col = ?, ...` and its values for a job's fields, each encoded as the jobs table stores it."""
    cols, values = [], []
    for key, value in fields.items():
        if key == "state":
            value = value.value
        elif key in ("error", "metrics") and value is not None:
            value = json.dumps(value)
        if value is BACK_OF_QUEUE:
            cols.append(f"{key} = {_BACK_SQL}")
        else:
            cols.append(f"{key} = ?")
            values.append(value)
    return ", ".join(cols), values





class SQLiteStore:
    """A base.Store in one SQLite file. Thread-safe; every write commits (with an fsync) before it returns.

    Writes and reads use separate connections: in WAL mode a read never waits for a write's fsync,
    so the control plane can run writes on a writer thread (`write`) and keep answering reads.
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._migrate()
        self._read_db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._read_db.row_factory = sqlite3.Row
        self._read_lock = threading.Lock()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunewire-store")
        self.writable = True  # False from a write that failed for want of space to the next that succeeds
        self.shared = False  # one process owns the file
        self._leases: dict[str, Lease] = {}  # the leases this process holds, by job id
        self._outbox: Outbox | None = None  # webhook deliveries enqueued with the events (set_outbox)

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        for number in range(version + 1, SCHEMA_VERSION + 1):
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                for statement in MIGRATIONS[number - 1].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")

    async def write(self, method: Callable[..., T], *args, **kwargs) -> T:
        """Run a write method on the single writer thread: in order, off the event loop. Raises DiskFull
        when the disk has no room for it."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, functools.partial(self._guarded, method, *args, **kwargs))

    def _guarded(self, method: Callable[..., T], *args, **kwargs) -> T:
        try:
            result = method(*args, **kwargs)
        except Exception as exc:
            if not _is_full(exc):
                raise
            self.writable = False
            if self._db.in_transaction:  # a failed COMMIT can leave it open: the next write must start clean
                with contextlib.suppress(sqlite3.Error):
                    self._db.rollback()
            raise DiskFull(f"the data disk is full: {exc}") from None
        self.writable = True
        return result

    def probe(self) -> None:
        """A small real write: whether the store can write again (run it through `write`)."""
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (time.time(),))

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        with self._lock, self._read_lock:
            self._db.close()
            self._read_db.close()

    def _read(self, sql: str, args=()) -> list[sqlite3.Row]:
        with self._read_lock:
            return self._read_db.execute(sql, args).fetchall()

    def pragma(self, name: str):
        return self._db.execute(f"PRAGMA {name}").fetchone()[0]

    # --- jobs -------------------------------------------------------------------------------

    def create_job(self, job_id: str, spec_json: str, request_id: str | None, first_event: tuple[str, dict],
                   plan_json: str | None = None) -> JobRecord:
        """Insert a QUEUED job and its first event in one transaction."""
        now = time.time()
        kind, payload = first_event
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            ordinal = self._db.execute(_NEXT_ORDINAL).fetchone()[0]
            self._db.execute(
                "INSERT INTO jobs (id, ordinal, request_id, spec, plan, state, created_at, last_seq, queue_seq)"
                f" VALUES (?, ?, ?, ?, ?, ?, ?, 1, {_BACK_SQL})",
                (job_id, ordinal, request_id, spec_json, plan_json, JobState.QUEUED.value, now),
            )
            self._db.execute(
                "INSERT INTO events (job_id, seq, time, kind, payload) VALUES (?, 1, ?, ?, ?)",
                (job_id, now, kind, json.dumps(payload)),
            )
        job = self.get_job(job_id)
        assert job is not None
        return job

    def claim_next(self, describe: Callable[[int], str] = started_message, *, owner: str | None = None,
                   lease_s: float | None = None) -> tuple[JobRecord, Event] | None:
        """The first QUEUED job in queue order, moved to RUNNING with its state_change event (base.Store).
        BEGIN IMMEDIATE takes the write lock before the pick: no other claim sees the same job queued.
        With `owner`, the claim holds the job's lease while this process lives (lease_s is not needed)."""
        if (owner is None) != (lease_s is None):
            raise ValueError("claim_next: a lease needs both its owner and lease_s")
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT id, attempts, last_seq FROM jobs WHERE state = ?"
                                   " ORDER BY queue_seq, ordinal LIMIT 1", (JobState.QUEUED.value,)).fetchone()
            if row is None:
                return None
            job_id, attempt, seq = row["id"], row["attempts"] + 1, row["last_seq"] + 1
            payload = {"state": JobState.RUNNING.value, "message": describe(attempt)}
            self._db.execute(
                "INSERT INTO events (job_id, seq, time, kind, payload) VALUES (?, ?, ?, 'state_change', ?)",
                (job_id, seq, now, json.dumps(payload)))
            self._db.execute(  # a started_at of 0 counts as unset, as `job.started_at or now` did
                "UPDATE jobs SET state = ?, attempts = ?, started_at = COALESCE(NULLIF(started_at, 0), ?),"
                " last_seq = ? WHERE id = ?", (JobState.RUNNING.value, attempt, now, seq, job_id))
            if owner is not None:
                self._leases[job_id] = Lease(owner, attempt)
            else:
                self._leases.pop(job_id, None)
        job = self.get_job(job_id)
        assert job is not None
        return job, Event(job_id, seq, now, "state_change", payload)

    # --- leases (this process's memory: see the module docstring) -------------------------------

    def lease(self, job_id: str) -> Lease | None:
        """This process's lease on the job; for a RUNNING, CANCELLING or PAUSING job it holds none of, an expired one."""
        held = self._leases.get(job_id)
        if held is not None:
            return held
        job = self.get_job(job_id)
        if job is None or job.state not in _HELD:
            return None
        return Lease("", job.attempts, expires_at=0.0, expired=True)

    def renew_lease(self, lease: Lease, job_id: str, lease_s: float) -> bool:
        """Whether the lease is still this job's (it never runs out while this process lives)."""
        held = self._leases.get(job_id)
        return held is not None and (held.owner, held.attempt) == (lease.owner, lease.attempt)

    def expired_leases(self) -> list[JobRecord]:
        """The RUNNING, CANCELLING or PAUSING jobs this process holds no lease on (a previous process left them)."""
        return [job for job in self.jobs_in_states(_HELD) if job.id not in self._leases]

    def listen(self, callback: Callable[[Notice], None]) -> Callable[[], None]:
        """Nothing to listen to: no other process writes to this file."""
        return lambda: None

    def _check(self, job_id: str, fence: Lease | None, expect_state: JobState | None) -> None:
        """Inside a write transaction: raise LeaseLost or StateChanged (or LookupError) if the write may not
        apply."""
        if fence is None and expect_state is None:
            return
        row = self._db.execute("SELECT state, attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise LookupError(f"no job {job_id!r} in the store")
        if expect_state is not None and row["state"] != expect_state.value:
            raise StateChanged(f"job {job_id} is {row['state']}, no longer {expect_state.value}")
        if fence is None:
            return
        held = self._leases.get(job_id)
        if fence.expired:  # a take-over: nobody in this process may hold it
            ok = held is None and row["attempts"] == fence.attempt and JobState(row["state"]) in _HELD
        else:
            ok = held is not None and (held.owner, held.attempt) == (fence.owner, fence.attempt)
        if not ok:
            raise LeaseLost(f"job {job_id}: the lease of {fence.owner} (attempt {fence.attempt}) is not held")

    def _released(self, job_id: str, fields: dict) -> None:
        """After a committed write setting `fields`: a state other than RUNNING, CANCELLING or PAUSING ends the lease."""
        state = fields.get("state")
        if state is not None and state not in _HELD:
            self._leases.pop(job_id, None)

    # --- jobs, continued -----------------------------------------------------------------------

    def get_job(self, job_id: str) -> JobRecord | None:
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return job_from_row(rows[0]) if rows else None

    def get_job_by_request_id(self, request_id: str) -> JobRecord | None:
        rows = self._read("SELECT * FROM jobs WHERE request_id = ?", (request_id,))
        return job_from_row(rows[0]) if rows else None

    def list_jobs(self, states: Sequence[JobState] = (), before_ordinal: int | None = None,
                  limit: int = 50) -> list[JobRecord]:
        """Newest first."""
        where, args = self._list_filter(states, before_ordinal)
        return [job_from_row(r) for r in self._read(f"SELECT * FROM jobs WHERE {where} ORDER BY ordinal DESC LIMIT ?",
                                                   [*args, limit])]

    def list_sizes(self, states: Sequence[JobState] = (), before_ordinal: int | None = None,
                   limit: int = 50) -> list[tuple[int, int]]:
        """(ordinal, stored bytes of its spec, error, metrics and request id) of what `list_jobs` would
        return, newest first, without reading the records: a page can be sized before it is read."""
        size = ("length(CAST(spec AS BLOB)) + COALESCE(length(CAST(error AS BLOB)), 0)"
                " + length(CAST(metrics AS BLOB)) + COALESCE(length(CAST(request_id AS BLOB)), 0)")
        where, args = self._list_filter(states, before_ordinal)
        rows = self._read(f"SELECT ordinal, {size} AS size FROM jobs WHERE {where} ORDER BY ordinal DESC LIMIT ?",
                          [*args, limit])
        return [(r["ordinal"], r["size"]) for r in rows]

    def jobs_by_ordinals(self, ordinals: Sequence[int]) -> list[JobRecord]:
        """The jobs with these ordinals (those that exist), newest first."""
        if not ordinals:
            return []
        rows = self._read(f"SELECT * FROM jobs WHERE ordinal IN ({','.join('?' * len(ordinals))})"
                          " ORDER BY ordinal DESC", list(ordinals))
        return [job_from_row(r) for r in rows]

    @staticmethod
    def _list_filter(states: Sequence[JobState], before_ordinal: int | None) -> tuple[str, list]:
        where, args = "1=1", []
        if states:
            where += f" AND state IN ({','.join('?' * len(states))})"
            args += [s.value for s in states]
        if before_ordinal is not None:
            where += " AND ordinal < ?"
            args.append(before_ordinal)
        return where, args

    def jobs_in_states(self, states: Iterable[JobState]) -> list[JobRecord]:
        """In the queue's order: by queue position (a retried job behind those queued before its retry),
        then by age."""
        states = list(states)
        rows = self._read(f"SELECT * FROM jobs WHERE state IN ({','.join('?' * len(states))})"
                          " ORDER BY queue_seq, ordinal", [s.value for s in states])
        return [job_from_row(r) for r in rows]

    def count_in_states(self, states: Iterable[JobState]) -> int:
        states = list(states)
        return self._read(f"SELECT COUNT(*) FROM jobs WHERE state IN ({','.join('?' * len(states))})",
                          [s.value for s in states])[0][0]

    def update_job(self, job_id: str, *, fence: Lease | None = None, **fields) -> None:
        cols, values = _set_clause(fields)
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._check(job_id, fence, None)
            self._db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*values, job_id))
        self._released(job_id, fields)

    def delete_job(self, job_id: str) -> bool:
        """Remove the job and its events in one transaction (base.Store.delete_job)."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT ordinal FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return False
            self._db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
                (_DELETED_ORDINAL, row["ordinal"]))
            self._db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return True

    # --- events -----------------------------------------------------------------------------

    def append_event(self, job_id: str, kind: str, payload: dict, job_fields: dict | None = None,
                     at: float | None = None, *, fence: Lease | None = None,
                     expect_state: JobState | None = None) -> Event:
        """Store an event with the job's next seq, and optionally update the job, atomically."""
        return self.append_events(job_id, [(kind, payload, job_fields, at)], fence=fence, expect_state=expect_state)[0]

    def append_events(self, job_id: str, items: Sequence[EventItem], *, fence: Lease | None = None,
                      expect_state: JobState | None = None) -> list[Event]:
        """Store several events (kind, payload, job fields, time) with the job's next seqs and apply
        their job fields in order, all in one transaction: one fsync however many there are. `fence` and
        `expect_state` as in base.Store.append_events."""
        fields: dict = {}
        rows = []
        for kind, payload, job_fields, at in items:
            rows.append((kind, payload, at or time.time()))
            fields.update(job_fields or {})
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._check(job_id, fence, expect_state)
            first = self._db.execute("SELECT last_seq + 1 FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
            self._db.executemany(
                "INSERT INTO events (job_id, seq, time, kind, payload) VALUES (?, ?, ?, ?, ?)",
                [(job_id, first + i, now, kind, json.dumps(payload)) for i, (kind, payload, now) in enumerate(rows)],
            )
            fields["last_seq"] = first + len(rows) - 1
            cols, values = _set_clause(fields)
            self._db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*values, job_id))
            events = [Event(job_id, first + i, now, kind, payload) for i, (kind, payload, now) in enumerate(rows)]
            enqueued = self._enqueue(events)
        self._released(job_id, fields)
        if enqueued and self._outbox is not None:
            self._outbox.enqueued()
        return events

    # --- webhook deliveries (base.Store: the outbox) ------------------------------------------

    def set_outbox(self, outbox: Outbox | None) -> None:
        self._outbox = outbox

    def _enqueue(self, events: Sequence[Event]) -> int:
        """Inside append_events' transaction: store the deliveries the outbox maps the events to."""
        if self._outbox is None:
            return 0
        new: list[NewDelivery] = [d for event in events for d in self._outbox.deliveries(event)]
        if not new:
            return 0
        ordinal = self._db.execute("SELECT COALESCE(MAX(ordinal), 0) FROM webhook_deliveries").fetchone()[0]
        self._db.executemany(
            "INSERT OR IGNORE INTO webhook_deliveries (id, event_id, url, event_type, job_id, body, created_at,"
            " next_attempt_at, ordinal) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(d.id, d.event_id, d.url, d.event_type, d.job_id, d.body, d.created_at, d.created_at, ordinal + i + 1)
             for i, d in enumerate(new)])
        return len(new)

    def claim_deliveries(self, owner: str, lease_s: float, limit: int) -> list[WebhookDelivery]:
        """The due pending deliveries, oldest due first, claimed by `owner` for lease_s seconds (base.Store)."""
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            ids = [r[0] for r in self._db.execute(
                "SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= ?"
                " ORDER BY next_attempt_at, ordinal LIMIT ?", (now, limit))]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            self._db.execute(f"UPDATE webhook_deliveries SET attempts = attempts + 1, claimed_by = ?,"
                             f" next_attempt_at = ? WHERE id IN ({marks})", (owner, now + lease_s, *ids))
            rows = self._db.execute(f"SELECT * FROM webhook_deliveries WHERE id IN ({marks})"
                                    " ORDER BY ordinal", ids).fetchall()
        return [delivery_from_row(r) for r in rows]

    def finish_delivery(self, delivery_id: str, owner: str, attempt: int, state: str, *,
                        retry_in_s: float = 0.0, error: str = "") -> bool:
        """Record a claimed attempt's result while the claim is the delivery's latest (base.Store)."""
        if state not in ("delivered", "pending", "failed"):
            raise ValueError(f"finish_delivery: unknown state {state!r}")
        now = time.time()
        with self._lock, self._db:
            return self._db.execute(
                "UPDATE webhook_deliveries SET state = ?, claimed_by = NULL, last_error = ?,"
                " next_attempt_at = ?, delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END"
                " WHERE id = ? AND claimed_by = ? AND attempts = ? AND state = 'pending'",
                (state, error, now + retry_in_s, state, now, delivery_id, owner, attempt)).rowcount == 1

    def release_deliveries(self, owner: str | None) -> int:
        """Make pending deliveries claimed by `owner` (None: anyone) due now and unclaimed (base.Store)."""
        with self._lock, self._db:
            return self._db.execute(
                "UPDATE webhook_deliveries SET claimed_by = NULL, next_attempt_at = ?"
                " WHERE state = 'pending' AND claimed_by IS NOT NULL AND (? IS NULL OR claimed_by = ?)",
                (time.time(), owner, owner)).rowcount

    def list_deliveries(self, job_id: str | None = None, limit: int = 1000) -> list[WebhookDelivery]:
        """In the order they were enqueued."""
        rows = self._read("SELECT * FROM webhook_deliveries WHERE ? IS NULL OR job_id = ? ORDER BY ordinal LIMIT ?",
                          (job_id, job_id, limit))
        return [delivery_from_row(r) for r in rows]

    def events_after(self, job_id: str, after_seq: int, limit: int = 1000) -> list[Event]:
        rows = self._read("SELECT seq, time, kind, payload FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                          (job_id, after_seq, limit))
        return [Event(job_id, r["seq"], r["time"], r["kind"], json.loads(r["payload"])) for r in rows]

    # --- uploads and datasets ---------------------------------------------------------------

    def begin_upload(self, upload: UploadRecord) -> UploadRecord:
        """Insert the upload unless its id is stored; return the stored one."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR IGNORE INTO uploads (upload_id, name, format, size, sha256, label_column, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (upload.upload_id, upload.name, upload.format, upload.size, upload.sha256, upload.label_column,
                 upload.created_at or time.time()))
            row = self._db.execute("SELECT * FROM uploads WHERE upload_id = ?", (upload.upload_id,)).fetchone()
        return upload_from_row(row)

    def get_upload(self, upload_id: str) -> UploadRecord | None:
        rows = self._read("SELECT * FROM uploads WHERE upload_id = ?", (upload_id,))
        return upload_from_row(rows[0]) if rows else None

    def delete_upload(self, upload_id: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))

    def add_dataset(self, dataset_id: str, name: str, fmt: str, size: int, sha256: str, file_name: str,
                    report_json: str, upload_id: str | None = None) -> DatasetRecord:
        """Insert the dataset unless its id is stored, and forget the upload, in one transaction."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if self._db.execute("SELECT 1 FROM datasets WHERE id = ?", (dataset_id,)).fetchone() is None:
                ordinal = self._db.execute("SELECT COALESCE(MAX(ordinal), 0) + 1 FROM datasets").fetchone()[0]
                self._db.execute(
                    "INSERT INTO datasets (id, ordinal, name, format, size, sha256, created_at, file_name, report)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (dataset_id, ordinal, name, fmt, size, sha256, time.time(), file_name, report_json))
            if upload_id is not None:
                self._db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
            row = self._db.execute("SELECT * FROM datasets WHERE id = ?", (dataset_id,)).fetchone()
        return dataset_from_row(row)

    def get_dataset(self, dataset_id: str) -> DatasetRecord | None:
        rows = self._read("SELECT * FROM datasets WHERE id = ?", (dataset_id,))
        return dataset_from_row(rows[0]) if rows else None

    def list_datasets(self, before_ordinal: int | None = None, limit: int = 50) -> list[DatasetRecord]:
        """Newest first."""
        where, args = ("ordinal < ?", [before_ordinal]) if before_ordinal is not None else ("1=1", [])
        rows = self._read(f"SELECT * FROM datasets WHERE {where} ORDER BY ordinal DESC LIMIT ?", [*args, limit])
        return [dataset_from_row(r) for r in rows]

    def delete_dataset(self, dataset_id: str) -> bool:
        with self._lock, self._db:
            return self._db.execute("DELETE FROM datasets WHERE id = ?", (dataset_id,)).rowcount > 0
