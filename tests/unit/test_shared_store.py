"""shared_store: the shared artifact store opened from settings, and a unit fetched into a local folder
(S3 = moto's server on 127.0.0.1; the folder backend as it is)."""

from __future__ import annotations

import json

import pytest

from tests.support.s3 import ACCESS_KEY, SECRET_KEY, running_moto
from tunewire_server import shared_store
from tunewire_server.artifacts import ArtifactNotFound, LocalArtifactStore, open_store
from tunewire_server.checkpoints import MARKER, mark_complete, verify
from tunewire_server.config import Settings

KEY = b"k" * 32


@pytest.fixture(scope="module")
def moto():
    with running_moto() as server:
        yield server


@pytest.fixture
def s3(moto, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    bucket = moto.create_bucket()
    settings = Settings(artifacts=f"s3://{bucket}/svc", s3_endpoint_url=moto.endpoint, s3_region="us-east-1",
                        s3_max_retries=1, s3_retry_timeout_s=2)
    return shared_store.open_shared(settings)


def marked_folder(path, step=3, content=b"weights"):
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(content)
    (path / "sub").mkdir()
    (path / "sub" / "state.json").write_text(json.dumps({"step": step}))
    mark_complete(path, step, KEY)
    return path


def test_no_setting_means_no_shared_store(tmp_path):
    assert shared_store.open_shared(Settings(data_dir=tmp_path)) is None


def test_the_same_setting_gives_the_same_store_object(tmp_path):
    a = Settings(data_dir=tmp_path, artifacts="s3://bucket/p", s3_endpoint_url="http://127.0.0.1:9")
    b = Settings(data_dir=tmp_path / "other", artifacts="s3://bucket/p", s3_endpoint_url="http://127.0.0.1:9")
    assert shared_store.open_shared(a) is shared_store.open_shared(b)
    c = Settings(data_dir=tmp_path, artifacts="s3://bucket/p", s3_endpoint_url="http://127.0.0.1:10")
    assert shared_store.open_shared(c) is not shared_store.open_shared(a)


def test_settings_refuse_a_part_size_s3_refuses(tmp_path):
    with pytest.raises(ValueError, match="s3_part_size"):
        Settings(data_dir=tmp_path, s3_part_size=1 << 20)


def test_a_fetched_unit_verifies_where_it_lands_and_is_reused(s3, tmp_path):
    s3.put_unit(marked_folder(tmp_path / "src"), "jobs/j1/checkpoints/checkpoint-3")
    dest = tmp_path / "replica" / "jobs" / "j1" / "checkpoints" / "checkpoint-3"
    assert shared_store.fetch_unit(s3, "jobs/j1/checkpoints/checkpoint-3", dest) == dest
    assert verify(dest, KEY) is None  # the marker travelled byte for byte: its signature still checks
    inode = (dest / "model.safetensors").stat().st_ino
    shared_store.fetch_unit(s3, "jobs/j1/checkpoints/checkpoint-3", dest)
    assert (dest / "model.safetensors").stat().st_ino == inode  # the same marker: kept, not fetched again
    assert sorted(p.name for p in dest.parent.iterdir()) == ["checkpoint-3"]  # no cache or staging left


def test_a_half_written_local_folder_is_replaced_by_the_stored_unit(s3, tmp_path):
    s3.put_unit(marked_folder(tmp_path / "src"), "jobs/j2/model")
    dest = tmp_path / "replica" / "model"
    dest.mkdir(parents=True)
    (dest / "model.safetensors").write_bytes(b"torn")
    shared_store.fetch_unit(s3, "jobs/j2/model", dest)
    assert (dest / "model.safetensors").read_bytes() == b"weights"
    assert verify(dest, KEY) is None


def test_a_unit_without_its_marker_is_never_fetched(s3, tmp_path):
    s3.put_unit(marked_folder(tmp_path / "src"), "jobs/j3/model")
    s3.delete_prefix(f"jobs/j3/model/{MARKER}")  # files there, marker gone: not a unit
    with pytest.raises(ArtifactNotFound):
        shared_store.fetch_unit(s3, "jobs/j3/model", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_a_folder_store_is_copied_from_never_moved(tmp_path):
    store = open_store(tmp_path / "store")
    assert isinstance(store, LocalArtifactStore)
    store.put_unit(marked_folder(tmp_path / "src"), "jobs/j4/model")
    dest = shared_store.fetch_unit(store, "jobs/j4/model", tmp_path / "replica" / "model")
    assert verify(dest, KEY) is None
    assert verify(store.path("jobs/j4/model"), KEY) is None  # the store's own unit is still there
