"""The folder backend's own behaviour: units already in place are stored without a copy, today's marked
checkpoints are units as they lie, ranged reads hold the file open, a clear error for an unusable root."""

from __future__ import annotations

import os

import pytest

from tests.unit.test_artifacts_base import make_folder
from tunewire_server import checkpoints
from tunewire_server.artifacts import ArtifactStoreMisconfigured, LocalArtifactStore, open_store


def test_local_a_unit_already_in_place_is_stored_without_a_copy(tmp_path):
    store = LocalArtifactStore(tmp_path / "data")
    folder = tmp_path / "data" / "jobs" / "j" / "checkpoints" / "checkpoint-3"
    folder.mkdir(parents=True)
    make_folder(folder)
    inode = (folder / "model.safetensors").stat().st_ino
    assert store.list_units() == []  # no marker yet: not complete
    store.put_unit(folder, "jobs/j/checkpoints/checkpoint-3")
    assert (folder / "model.safetensors").stat().st_ino == inode
    assert store.get_unit("jobs/j/checkpoints/checkpoint-3", tmp_path / "cache") == folder
    assert not (tmp_path / "cache").exists()
    assert store.list_units() == ["jobs/j/checkpoints/checkpoint-3"]


def test_local_today_s_checkpoints_are_units(tmp_path):
    """A checkpoint the worker marked (checkpoints.mark_complete) is a complete unit as it lies."""
    folder = tmp_path / "data" / "jobs" / "j" / "checkpoints" / "checkpoint-5"
    folder.mkdir(parents=True)
    make_folder(folder)
    checkpoints.mark_complete(folder, 5, b"k" * 32)
    store = open_store(f"file://{tmp_path / 'data'}")
    assert store.list_units("jobs/j") == ["jobs/j/checkpoints/checkpoint-5"]
    assert store.manifest("jobs/j/checkpoints/checkpoint-5").step == 5
    assert store.put_unit(folder, "jobs/j/checkpoints/checkpoint-5").step == 5
    assert checkpoints.verify(folder, b"k" * 32) is None  # nothing added into the folder


def test_local_check_fails_clearly_on_an_unwritable_root(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ArtifactStoreMisconfigured, match="cannot be written"):
        LocalArtifactStore(tmp_path / "file" / "store").check()




def test_local_an_open_file_stays_readable_after_it_is_deleted(tmp_path):
    store = LocalArtifactStore(tmp_path / "data")
    data = os.urandom(100_000)
    (tmp_path / "src.bin").write_bytes(data)
    store.put_file("datasets/d.bin", tmp_path / "src.bin")
    with store.open_file("datasets/d.bin") as reader:
        assert store.delete_prefix("datasets") == 1
        assert b"".join(reader.chunks(chunk_size=4096)) == data
