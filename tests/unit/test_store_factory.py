"""store/factory.py and the `store` setting: SQLite by default, PostgreSQL for a postgresql:// URL, and a
clear error naming `store` (the server exits non-zero) when the URL is wrong or PostgreSQL is down."""

from __future__ import annotations

import pytest

from tunewire_server.__main__ import main
from tunewire_server.config import Settings
from tunewire_server.store import SQLiteStore
from tunewire_server.store.factory import open_store


def test_an_empty_store_setting_is_the_sqlite_file_under_the_data_dir(tmp_path):
    settings = Settings(data_dir=tmp_path)
    store = open_store(settings)
    try:
        assert isinstance(store, SQLiteStore) and store.shared is False
        assert settings.db_path.exists()
    finally:
        store.close()


def test_a_postgresql_url_opens_a_shared_store(tmp_path, postgres_url):
    store = open_store(Settings(data_dir=tmp_path, store=postgres_url))
    try:
        assert store.shared is True and type(store).__name__ == "PostgresStore"
    finally:
        store.close()


def test_a_store_that_is_no_postgresql_url_is_refused_at_once(tmp_path):
    with pytest.raises(ValueError, match="store must be empty .* or a postgresql:// URL"):
        Settings(data_dir=tmp_path, store="mysql://u:secret@h/db")


def test_the_heartbeat_must_come_before_the_lease_runs_out(tmp_path):
    with pytest.raises(ValueError, match="heartbeat_s must be above 0 and below lease_s"):
        Settings(data_dir=tmp_path, lease_s=3, heartbeat_s=3)


def test_the_replica_id_defaults_to_the_pod_name_else_host_and_pid(tmp_path, monkeypatch):
    monkeypatch.setenv("POD_NAME", "tunewire-2")
    assert Settings(data_dir=tmp_path).replica_id == "tunewire-2"
    assert Settings(data_dir=tmp_path, replica_id="mine").replica_id == "mine"
    monkeypatch.delenv("POD_NAME")
    import os
    assert Settings(data_dir=tmp_path).replica_id.endswith(f"-{os.getpid()}")


@pytest.mark.parametrize("url", ["postgresql://u:hunter2@127.0.0.1:1/db?connect_timeout=2",
                                 "postgresql://u:hunter2@[not a host/db"])
def test_the_server_exits_non_zero_naming_the_store_when_postgresql_cannot_be_used(tmp_path, capsys, url,
                                                                                   monkeypatch):
    from tunewire_server import logs

    monkeypatch.setattr(logs, "configure", lambda *args: None)  # logging stays as it is (not on capsys' stdout)
    with pytest.raises(SystemExit) as exited:
        main(["--store", url, "--data-dir", str(tmp_path), "--port", "0", "--metrics-port", "-1"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "tunewire-server: store:" in err and "hunter2" not in err
