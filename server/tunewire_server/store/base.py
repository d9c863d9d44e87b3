"""The Store protocol: the only way the server touches persistence, and the records it deals in.

A store holds jobs (a spec, the plan validation resolved for it, its state and progress fields) and each
job's events, numbered 1, 2, 3... per job with no gaps; uploaded datasets' metadata and the uploads in
progress (the bytes themselves are files: see tunewire_server.datasets). SQLite implements it for one
process (sqlite.py); PostgreSQL for several replicas sharing one queue (postgres.py: `FOR UPDATE SKIP
LOCKED` claims, leases, NOTIFY). tests/unit/test_store.py is the contract every implementation must pass.

Leases: a claim made with an `owner` holds the job's lease (owner, attempt) until it is renewed no more;
writes of a running job carry it as `fence` and raise LeaseLost once it is no longer the job's. With
SQLite one process owns the file: its leases never expire while it lives, and a job a previous process
left RUNNING has an expired lease (nobody holds it).
"""

from __future__ import annotations

import errno
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from tunewire_server.jobs.states import TERMINAL, JobState

T = TypeVar("T")

# A value for the job field `queue_seq` (in update_job / append_event job fields): behind every job stored.
BACK_OF_QUEUE: Any = object()


class DiskFull(Exception):
    """A store write failed because the disk (or the file system's quota) is full."""


class StoreUnavailable(DiskFull):
    """A store write failed because the database could not be reached (down, restarting, a lost connection).

    A DiskFull so that the job core treats it as it treats a full disk: the store reports itself not
    writable, writes are retried after pauses and a probe tells when the store can write again."""


class LeaseLost(Exception):
    """A fenced write refused: the job's lease is no longer the one the writer holds (another replica
    took the job over, or it left RUNNING/CANCELLING). Nothing was written."""


class StateChanged(Exception):
    """A write given `expect_state` refused: the job is no longer in that state (another replica moved
    it on since it was read). Nothing was written."""


@dataclass(frozen=True)
class Lease:
    """A claim on a running job: who holds it and for which attempt (the fencing token: every claim adds
    one to the job's attempts). As a `fence` on a write, the write applies only while this lease is the
    job's; with `expired=True` (a replica taking an abandoned job over) only once it has also expired."""

    owner: str
    attempt: int
    expires_at: float = math.inf  # the database's clock, in seconds since the epoch (as read; not compared)
    expired: bool = False


@dataclass(frozen=True)
class Notice:
    """What a shared store tells every replica (Store.listen): a job's events up to `seq` are stored
    (`queued` False), or a job was queued (`queued` True, `seq` 0). Never the payload."""

    job_id: str
    seq: int = 0
    queued: bool = False


def is_disk_full(exc: BaseException) -> bool:
    """Whether a file-system error means "no space left" (ENOSPC, or EDQUOT for a quota)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@dataclass
class JobRecord:
    id: str
    ordinal: int  # the listing's order: 1, 2, 3... by submission, never reused
    spec_json: str  # the JobSpec as protobuf JSON, exactly as submitted
    state: JobState
    created_at: float
    request_id: str | None = None  # the client's idempotency key: unique among jobs
    error: dict | None = None
    started_at: float | None = None
    ended_at: float | None = None
    attempts: int = 0
    pauses: int = 0  # the attempts that ended in a pause (PauseJob): attempts - pauses are the ones counted
    last_seq: int = 0  # the seq of the job's newest event
    progress: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    queue_seq: int = 0  # the queue's order (the scheduler's pick); `ordinal` is the listing's
    plan_json: str | None = None  # the plan validation resolved, as JSON; None for a job stored without one

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def plan(self) -> dict | None:
        return json.loads(self.plan_json) if self.plan_json is not None else None


@dataclass(frozen=True)
class UploadRecord:
    """An upload in progress: what its client declared. The bytes received so far are its partial file."""

    upload_id: str
    name: str
    format: str  # "jsonl" | "csv" | "tsv" | "parquet"
    size: int
    sha256: str  # lowercase hex
    label_column: str = ""
    created_at: float = 0.0


@dataclass(frozen=True)
class DatasetRecord:
    """An uploaded dataset: stored once per content (`sha256`), its id derived from it."""

    id: str
    ordinal: int  # the listing's order: 1, 2, 3... by arrival, never reused
    name: str
    format: str
    size: int
    sha256: str
    created_at: float
    file_name: str  # the stored file, relative to the uploaded datasets' folder
    report_json: str  # the validation report, as JSON

    @property
    def report(self) -> dict:
        return json.loads(self.report_json)


@dataclass(frozen=True)
class Event:
    job_id: str
    seq: int
    time: float
    kind: str
    payload: dict


@dataclass(frozen=True)
class NewDelivery:
    """A webhook delivery to enqueue (the outbox): `body` is the JSON text sent, and signed, on every
    attempt; `event_id` is its webhook-id (the receiver's de-duplication key), the same on every retry."""

    id: str  # the delivery's own id: one per (event, endpoint)
    event_id: str
    url: str
    event_type: str
    job_id: str
    body: str
    created_at: float


@dataclass(frozen=True)
class WebhookDelivery:
    """A stored webhook delivery. `state`: pending (to be sent at or after next_attempt_at), delivered or
    failed (gave up). `attempts` counts claims; a claim's `attempts` value fences the write of its result."""

    id: str
    event_id: str
    url: str
    event_type: str
    job_id: str
    body: str
    created_at: float
    state: str = "pending"
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str = ""
    delivered_at: float | None = None
    claimed_by: str | None = None


class Outbox(Protocol):
    """What a store asks, inside the transaction that appends a job's events (append_event(s)), for the
    webhook deliveries each event brings: they commit with the event or not at all."""

    def deliveries(self, event: Event) -> Sequence[NewDelivery]:
        """The deliveries `event` brings (none for most): pure, no I/O (it runs inside a transaction)."""
        ...

    def enqueued(self) -> None:
        """Called (from the store's writer thread) after a commit that enqueued deliveries."""
        ...


# One event to append: (kind, payload, job fields to set with it or None, time or None for now).
EventItem = tuple[str, dict, "dict | None", "float | None"]


def started_message(attempt: int) -> str:
    """The message of the RUNNING state change that starts attempt `attempt` (1 for the first)."""
    return "started" if attempt == 1 else f"attempt {attempt}"


class Store(Protocol):
    """Jobs and their events. Reads may be called from any thread (the event loop included) and never
    wait for a write. Write methods (create_job, claim_next, update_job, append_event(s), renew_lease,
    probe) are run through `write`; each is atomic and durable when it returns. Job fields in
    `update_job` and the job fields of events are JobRecord field names; `state` takes a JobState,
    `error` and `metrics` dicts (or None), `queue_seq` may be BACK_OF_QUEUE. A state other than RUNNING,
    CANCELLING or PAUSING releases the job's lease."""

    writable: bool
    """False from a write that failed for want of disk space (DiskFull) to the next write that succeeds."""

    shared: bool
    """True where other server processes take jobs from the same store (PostgreSQL): events and queued
    jobs may come from elsewhere (see `listen`), and a stopping server hands its job over."""

    async def write(self, method: Callable[..., T], *args, **kwargs) -> T:
        """Run the write method `method(*args, **kwargs)` off the event loop, after the writes called
        before it. Raises DiskFull when the disk has no room for it; the store is then as it was."""
        ...

    def probe(self) -> None:
        """A small real write: succeeds only if the store can write again."""
        ...

    def close(self) -> None:
        """Finish pending writes and release the store."""
        ...

    # --- jobs ------------------------------------------------------------------------------------

    def create_job(self, job_id: str, spec_json: str, request_id: str | None, first_event: tuple[str, dict],
                   plan_json: str | None = None) -> JobRecord:
        """Insert a QUEUED job (the next ordinal, at the back of the queue) with its first event (seq 1),
        atomically. A request_id already used by a job raises; callers look it up first."""
        ...

    def claim_next(self, describe: Callable[[int], str] = started_message, *, owner: str | None = None,
                   lease_s: float | None = None) -> tuple[JobRecord, Event] | None:
        """Atomically take the first QUEUED job in queue order (queue_seq, then ordinal): move it to
        RUNNING, add 1 to its attempts, set started_at if it was never set, and append its state_change
        event {"state": "RUNNING", "message": describe(attempt)}. Returns the updated job and that event,
        or None when nothing is queued. No two calls claim the same job. With `owner` and `lease_s` the
        claim holds the job's lease, Lease(owner, attempts), for lease_s seconds (renew_lease)."""
        ...

    # --- leases ----------------------------------------------------------------------------------

    def lease(self, job_id: str) -> Lease | None:
        """The lease on a RUNNING, CANCELLING or PAUSING job (None if it has none); `expired` says whether it ran out."""
        ...

    def renew_lease(self, lease: Lease, job_id: str, lease_s: float) -> bool:
        """Hold the job lease_s seconds more (a heartbeat); False if the lease is no longer `lease` (taken
        over, or the job left RUNNING/CANCELLING): its holder must stop writing for the job. A write method."""
        ...

    def expired_leases(self) -> list[JobRecord]:
        """The RUNNING, CANCELLING or PAUSING jobs whose lease ran out (their server died), in the queue's order:
        another takes each over with a write fenced by Lease(owner, attempt, expired=True)."""
        ...

    def listen(self, callback: Callable[[Notice], None]) -> Callable[[], None]:
        """Call `callback` (from another thread) for each Notice other processes' writes send; returns
        the function that stops listening. A store no other process writes to sends none."""
        ...

    def get_job(self, job_id: str) -> JobRecord | None:
        ...

    def get_job_by_request_id(self, request_id: str) -> JobRecord | None:
        ...

    def update_job(self, job_id: str, *, fence: Lease | None = None, **fields) -> None:
        """Set job fields (see the class docstring) without an event; with `fence`, only while that lease
        is the job's (else LeaseLost)."""
        ...

    def jobs_in_states(self, states: Iterable[JobState]) -> list[JobRecord]:
        """The jobs in these states in the queue's order: by queue position (a retried job behind those
        queued before its retry), then by ordinal."""
        ...

    def count_in_states(self, states: Iterable[JobState]) -> int:
        ...

    def delete_job(self, job_id: str) -> bool:
        """Remove a job's record and all its events in one atomic write: False (and nothing changed) when no
        job has this id. Afterwards get_job and get_job_by_request_id find nothing, so its request id may name
        a new job; its ordinal is never given to another job (create_job numbers past every ordinal ever
        stored, deleted ones included). Callers delete only terminal jobs (nothing appends to them). A write
        method."""
        ...

    # --- listing ---------------------------------------------------------------------------------

    def list_jobs(self, states: Sequence[JobState] = (), before_ordinal: int | None = None,
                  limit: int = 50) -> list[JobRecord]:
        """At most `limit` jobs (any state if `states` is empty) with an ordinal below before_ordinal,
        newest (highest ordinal) first."""
        ...

    def list_sizes(self, states: Sequence[JobState] = (), before_ordinal: int | None = None,
                   limit: int = 50) -> list[tuple[int, int]]:
        """(ordinal, stored bytes of its spec, error, metrics and request id as UTF-8) of what list_jobs
        would return, newest first, without reading the records: a page can be sized before it is read."""
        ...

    def jobs_by_ordinals(self, ordinals: Sequence[int]) -> list[JobRecord]:
        """The jobs with these ordinals (those that exist), newest first."""
        ...

    # --- events ----------------------------------------------------------------------------------

    def append_event(self, job_id: str, kind: str, payload: dict, job_fields: dict | None = None,
                     at: float | None = None, *, fence: Lease | None = None,
                     expect_state: JobState | None = None) -> Event:
        """Store an event with the job's next seq, and optionally set job fields, atomically (fence and
        expect_state as in append_events)."""
        ...

    def append_events(self, job_id: str, items: Sequence[EventItem], *, fence: Lease | None = None,
                      expect_state: JobState | None = None) -> list[Event]:
        """Store several events with the job's next seqs and set their job fields in order, all in one
        atomic write. The job's last_seq becomes the last event's seq. With `fence`, only while that lease
        is the job's (else LeaseLost); with `expect_state`, only while the job is in that state (else
        StateChanged). Nothing is written when either refuses."""
        ...

    def events_after(self, job_id: str, after_seq: int, limit: int = 1000) -> list[Event]:
        """At most `limit` of the job's events with a seq above after_seq, in seq order. after_seq is a
        signed 64-bit integer (the servicer clamps a client's value)."""
        ...

    # --- webhook deliveries (the outbox) -------------------------------------------------------------
    # The writes below are atomic and durable like the others, and safe from any thread: the dispatcher
    # calls them on a thread of its own rather than through `write` (see webhooks/dispatcher.py).

    def set_outbox(self, outbox: Outbox | None) -> None:
        """From now on, append_event(s) store the deliveries `outbox` maps each appended event to, in the
        same transaction (None: none). Set before the job core starts writing."""
        ...

    def claim_deliveries(self, owner: str, lease_s: float, limit: int) -> list[WebhookDelivery]:
        """Atomically take at most `limit` pending deliveries that are due (next_attempt_at passed, on the
        store's clock), oldest due first: each gets attempts + 1, claimed_by `owner`, and next_attempt_at
        now + lease_s (nobody else takes it meanwhile; if its sender dies it is due again then). Across
        replicas no two claims take the same delivery (FOR UPDATE SKIP LOCKED)."""
        ...

    def finish_delivery(self, delivery_id: str, owner: str, attempt: int, state: str, *,
                        retry_in_s: float = 0.0, error: str = "") -> bool:
        """Record a claimed attempt's result, only while the claim (owner, attempt) is the delivery's latest:
        state "delivered" (sets delivered_at), "pending" (due again retry_in_s seconds from now, on the
        store's clock) or "failed" (given up); `error` is kept as last_error. False if the claim was not
        held (nothing written)."""
        ...

    def release_deliveries(self, owner: str | None) -> int:
        """Make the pending deliveries claimed by `owner` (None: by anyone) due now and unclaimed (a stopping
        sender; with one process per store, a start after a crash). Returns how many."""
        ...

    def list_deliveries(self, job_id: str | None = None, limit: int = 1000) -> list[WebhookDelivery]:
        """At most `limit` deliveries (of the job `job_id`, or all), in the order they were enqueued."""
        ...

    # --- uploads and datasets ----------------------------------------------------------------------

    def begin_upload(self, upload: UploadRecord) -> UploadRecord:
        """Store an upload in progress, unless one with its upload_id is stored: then return that one
        unchanged (the caller compares what was declared). A write method."""
        ...

    def get_upload(self, upload_id: str) -> UploadRecord | None:
        ...

    def delete_upload(self, upload_id: str) -> None:
        """Forget an upload in progress (nothing if there is none). A write method."""
        ...

    def add_dataset(self, dataset_id: str, name: str, fmt: str, size: int, sha256: str, file_name: str,
                    report_json: str, upload_id: str | None = None) -> DatasetRecord:
        """Store a dataset (the next ordinal) and forget the upload `upload_id`, atomically. If a dataset
        with this id is stored already, it is kept as it is and returned. A write method."""
        ...

    def get_dataset(self, dataset_id: str) -> DatasetRecord | None:
        ...

    def list_datasets(self, before_ordinal: int | None = None, limit: int = 50) -> list[DatasetRecord]:
        """At most `limit` datasets with an ordinal below before_ordinal, newest first."""
        ...

    def delete_dataset(self, dataset_id: str) -> bool:
        """Remove a dataset's record; False if there was none. A write method."""
        ...


# Rows to records: both stores name their columns alike (sqlite3.Row and psycopg's dict rows).

def job_from_row(row: Mapping[str, Any]) -> JobRecord:
    """A jobs-table row as a JobRecord."""
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
        queue_seq=row["queue_seq"],
        plan_json=row["plan"],
        pauses=row["pauses"],
    )


def dataset_from_row(row: Mapping[str, Any]) -> DatasetRecord:
    """A datasets-table row as a DatasetRecord."""
    return DatasetRecord(id=row["id"], ordinal=row["ordinal"], name=row["name"], format=row["format"],
                         size=row["size"], sha256=row["sha256"], created_at=row["created_at"],
                         file_name=row["file_name"], report_json=row["report"])


def upload_from_row(row: Mapping[str, Any]) -> UploadRecord:
    """An uploads-table row as an UploadRecord."""
    return UploadRecord(upload_id=row["upload_id"], name=row["name"], format=row["format"], size=row["size"],
                        sha256=row["sha256"], label_column=row["label_column"], created_at=row["created_at"])



def delivery_from_row(row: Mapping[str, Any]) -> WebhookDelivery:
    """A webhook_deliveries-table row as a WebhookDelivery."""
    return WebhookDelivery(id=row["id"], event_id=row["event_id"], url=row["url"], event_type=row["event_type"],
                           job_id=row["job_id"], body=row["body"], created_at=row["created_at"],
                           state=row["state"], attempts=row["attempts"], next_attempt_at=row["next_attempt_at"],
                           last_error=row["last_error"], delivered_at=row["delivered_at"],
                           claimed_by=row["claimed_by"])
