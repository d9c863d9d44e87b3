"""Persistence of jobs, their events, uploaded datasets and uploads in progress: the Store protocol (base.py),
its SQLite implementation (one process) and, imported only when a `postgresql://` store is set, PostgreSQL
(many replicas); factory.open_store picks one from the settings."""

from tunewire_server.store.base import (
    BACK_OF_QUEUE,
    DatasetRecord,
    DiskFull,
    Event,
    EventItem,
    JobRecord,
    Lease,
    LeaseLost,
    Notice,
    StateChanged,
    Store,
    StoreUnavailable,
    UploadRecord,
    is_disk_full,
    started_message,
)
from tunewire_server.store.sqlite import SCHEMA, SCHEMA_VERSION, SQLiteStore

__all__ = ["BACK_OF_QUEUE", "SCHEMA", "SCHEMA_VERSION", "DatasetRecord", "DiskFull", "Event", "EventItem", "JobRecord",
           "Lease", "LeaseLost", "Notice", "SQLiteStore", "StateChanged", "Store", "StoreUnavailable", "UploadRecord",
           "is_disk_full", "started_message"]
