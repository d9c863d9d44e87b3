"""Open the store the settings name: the SQLite file under data_dir (the default, for one process) or a
PostgreSQL database (a `postgresql://` URL, shared by several replicas). PostgreSQL is imported only then."""

from __future__ import annotations

from tunewire_server.config import Settings
from tunewire_server.store.base import Store
from tunewire_server.store.sqlite import SQLiteStore


def open_store(settings: Settings) -> Store:
    """The store `settings.store` names. A ValueError naming `store` when it cannot be used (a bad URL,
    PostgreSQL unreachable or refusing, psycopg missing): the server does not start."""
    if not settings.store:
        return SQLiteStore(settings.db_path)
    try:
        from tunewire_server.store.postgres import PostgresStore
    except ImportError as exc:
        raise ValueError(f"store: a PostgreSQL store needs psycopg 3 and psycopg-pool ({exc.name} is not "
                         "installed)") from None
    return PostgresStore(settings.store)
