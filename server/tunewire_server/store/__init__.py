"""Persistence of jobs and their events: the Store protocol (base.py) and its SQLite implementation."""

from tunewire_server.store.base import (
    BACK_OF_QUEUE,
    DiskFull,
    Event,
    EventItem,
    JobRecord,
    Store,
    is_disk_full,
    started_message,
)
from tunewire_server.store.sqlite import SCHEMA, SCHEMA_VERSION, SQLiteStore

__all__ = ["BACK_OF_QUEUE", "SCHEMA", "SCHEMA_VERSION", "DiskFull", "Event", "EventItem", "JobRecord",
           "SQLiteStore", "Store", "is_disk_full", "started_message"]
