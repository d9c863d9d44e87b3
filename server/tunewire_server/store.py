"""The job store: SQLite in WAL mode with synchronous=FULL, behind one small interface.

Every write is committed before the call returns, so a job the client has been told about survives
a crash of the server. The spec is stored as its protobuf JSON; events as JSON payloads.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tunewire_server.states import TERMINAL, JobState

T = TypeVar("T")

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


@dataclass
class JobRecord:
    id: str
    ordinal: int
    spec_json: str
    state: JobState
    created_at: float
    request_id: str | None = None
    error: dict | None = None
    started_at: float | None = None
    ended_at: float | None = None
    attempts: int = 0
    last_seq: int = 0
    progress: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True)
class Event:
    job_id: str
    seq: int
    time: float
    kind: str
    payload: dict


def _row_to_job(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        ordinal=row["ordinal"],
        request_id=row["request_id"],
        spec_json=row["spec"],
        state=JobState(row["state"]),
        error=json.loads(row["error"]) if row["error"] else None,
        created_at=row["created_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        attempts=row["attempts"],
        last_seq=row["last_seq"],
        progress=row["progress"],
        metrics=json.loads(row["metrics"]),
    )


class Store:
    """Thread-safe; every write commits (with an fsync) before it returns.

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
        self._read_db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._read_db.row_factory = sqlite3.Row
        self._read_lock = threading.Lock()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunewire-store")

    async def write(self, method: Callable[..., T], *args, **kwargs) -> T:
        """Run a write method on the single writer thread: in order, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, functools.partial(method, *args, **kwargs))

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

    def create_job(self, job_id: str, spec_json: str, request_id: str | None, first_event: tuple[str, dict]) -> JobRecord:
        """Insert a QUEUED job and its first event in one transaction."""
        now = time.time()
        kind, payload = first_event
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            ordinal = self._db.execute("SELECT COALESCE(MAX(ordinal), 0) + 1 FROM jobs").fetchone()[0]
            self._db.execute(
                "INSERT INTO jobs (id, ordinal, request_id, spec, state, created_at, last_seq)"
                " VALUES (?, ?, ?, ?, ?, ?, 1)",
                (job_id, ordinal, request_id, spec_json, JobState.QUEUED.value, now),
            )
            self._db.execute(
                "INSERT INTO events (job_id, seq, time, kind, payload) VALUES (?, 1, ?, ?, ?)",
                (job_id, now, kind, json.dumps(payload)),
            )
        job = self.get_job(job_id)
        assert job is not None
        return job

    def get_job(self, job_id: str) -> JobRecord | None:
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _row_to_job(rows[0]) if rows else None

    def get_job_by_request_id(self, request_id: str) -> JobRecord | None:
        rows = self._read("SELECT * FROM jobs WHERE request_id = ?", (request_id,))
        return _row_to_job(rows[0]) if rows else None

    def list_jobs(self, states: Sequence[JobState] = (), before_ordinal: int | None = None,
                  limit: int = 50) -> list[JobRecord]:
        """Newest first."""
        sql, args = "SELECT * FROM jobs WHERE 1=1", []
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += [s.value for s in states]
        if before_ordinal is not None:
            sql += " AND ordinal < ?"
            args.append(before_ordinal)
        sql += " ORDER BY ordinal DESC LIMIT ?"
        args.append(limit)
        return [_row_to_job(r) for r in self._read(sql, args)]

    def jobs_in_states(self, states: Iterable[JobState]) -> list[JobRecord]:
        """Oldest first: the FIFO order of the queue."""
        states = list(states)
        rows = self._read(f"SELECT * FROM jobs WHERE state IN ({','.join('?' * len(states))}) ORDER BY ordinal",
                          [s.value for s in states])
        return [_row_to_job(r) for r in rows]

    def count_in_states(self, states: Iterable[JobState]) -> int:
        states = list(states)
        return self._read(f"SELECT COUNT(*) FROM jobs WHERE state IN ({','.join('?' * len(states))})",
                          [s.value for s in states])[0][0]

    def update_job(self, job_id: str, **fields) -> None:
        if "state" in fields:
            fields["state"] = fields["state"].value
        for key in ("error", "metrics"):
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key])
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._lock, self._db:
            self._db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    # --- events -----------------------------------------------------------------------------

    def append_event(self, job_id: str, kind: str, payload: dict, job_fields: dict | None = None,
                     at: float | None = None) -> Event:
        """Store an event with the job's next seq, and optionally update the job, atomically."""
        return self.append_events(job_id, [(kind, payload, job_fields, at)])[0]

    def append_events(self, job_id: str,
                      items: Sequence[tuple[str, dict, dict | None, float | None]]) -> list[Event]:
        """Store several events (kind, payload, job fields, time) with the job's next seqs and apply
        their job fields in order, all in one transaction: one fsync however many there are."""
        fields: dict = {}
        rows = []
        for kind, payload, job_fields, at in items:
            rows.append((kind, payload, at or time.time()))
            for key, value in (job_fields or {}).items():
                if key == "state":
                    value = value.value
                elif key in ("error", "metrics") and value is not None:
                    value = json.dumps(value)
                fields[key] = value
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            first = self._db.execute("SELECT last_seq + 1 FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
            self._db.executemany(
                "INSERT INTO events (job_id, seq, time, kind, payload) VALUES (?, ?, ?, ?, ?)",
                [(job_id, first + i, now, kind, json.dumps(payload)) for i, (kind, payload, now) in enumerate(rows)],
            )
            fields["last_seq"] = first + len(rows) - 1
            cols = ", ".join(f"{k} = ?" for k in fields)
            self._db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))
        return [Event(job_id, first + i, now, kind, payload) for i, (kind, payload, now) in enumerate(rows)]

    def events_after(self, job_id: str, after_seq: int, limit: int = 1000) -> list[Event]:
        rows = self._read("SELECT seq, time, kind, payload FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                          (job_id, after_seq, limit))
        return [Event(job_id, r["seq"], r["time"], r["kind"], json.loads(r["payload"])) for r in rows]
