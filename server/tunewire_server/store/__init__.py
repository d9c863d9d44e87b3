"""Persistence of jobs, their events, uploaded datasets and uploads in progress: the Store protocol (base.py) and its SQLite implementation."""

from tunewire_server.store.base import (
    BACK_OF_QUEUE,
    DatasetRecord,
    DiskFull,
    Event,
    EventItem,
    JobRecord,
    Store,
    UploadRecord,
    is_disk_full,
    started_message,
)
from tunewire_server.store.sqlite import SCHEMA, SCHEMA_VERSION, SQLiteStore

__all__ = ["BACK_OF_QUEUE", "SCHEMA", "SCHEMA_VERSION", "DatasetRecord", "DiskFull", "Event", "EventItem", "JobRecord",
           "SQLiteStore", "Store", "UploadRecord", "is_disk_full", "started_message"]
