"""Units' markers: which files a unit has, reading a marker (never trusting one that points outside its unit),
writing one for a folder that came without."""

from __future__ import annotations

import json
import os

import pytest

from tunewire_server import checkpoints
from tunewire_server.artifacts.errors import ArtifactCorrupt
from tunewire_server.artifacts.unit import (
    MARKER,
    FileEntry,
    Hasher,
    build_marker,
    check_entry,
    folder_marker,
    parse_marker,
    reporting,
    unit_files,
)


def test_unit_files_are_what_checkpoints_marks(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.bin", "sub/b.json", MARKER, MARKER + ".tmp", "sub/" + MARKER):
        (tmp_path / name).write_bytes(b"x")
    os.symlink(tmp_path / "a.bin", tmp_path / "link.bin")
    os.symlink(tmp_path / "sub", tmp_path / "linkdir")
    assert unit_files(tmp_path) == ["a.bin", "sub/b.json"]
    checkpoints.mark_complete(tmp_path, 3, b"k" * 32)
    assert sorted(json.loads((tmp_path / MARKER).read_text())["files"]) == unit_files(tmp_path)


def test_a_marker_round_trips_and_keeps_its_bytes(tmp_path):
    files = {"a": FileEntry(3, "ab" * 32), "b/c": FileEntry(0, "cd" * 32)}
    raw = build_marker(files)
    manifest = parse_marker("u", raw)
    assert manifest.files == files and manifest.marker == raw and manifest.size == 3 and manifest.step is None
    (tmp_path / MARKER).write_bytes(raw)
    assert folder_marker(tmp_path, "u") == manifest
    assert folder_marker(tmp_path / "nowhere", "u") is None


def test_a_store_written_marker_never_passes_for_a_signed_checkpoint(tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    hasher = Hasher()
    hasher.update(b"abc")
    (tmp_path / MARKER).write_bytes(build_marker({"a": hasher.entry()}))
    assert checkpoints.verify(tmp_path, b"k" * 32) is not None


@pytest.mark.parametrize("raw", [b"not json", b"{}", b'{"files": {"a": {"size": "x"}}}', b'{"files": []}',
                                 b'{"files": {"../etc/passwd": {"size": 1, "sha256": "x"}}}',
                                 b'{"files": {"/abs": {"size": 1, "sha256": "x"}}}'])
def test_unreadable_or_escaping_markers_are_corrupt(raw):
    with pytest.raises(ArtifactCorrupt):
        parse_marker("u", raw)


def test_check_entry_tells_size_from_content():
    expected = FileEntry(3, "a" * 64)
    check_entry("u", "f", FileEntry(3, "a" * 64), expected)
    with pytest.raises(ArtifactCorrupt, match="bytes"):
        check_entry("u", "f", FileEntry(4, "a" * 64), expected)
    with pytest.raises(ArtifactCorrupt, match="sha256"):
        check_entry("u", "f", FileEntry(3, "b" * 64), expected)


def test_reporting_passes_chunks_and_counts():
    seen = []
    assert list(reporting(iter([b"ab", b"c"]), "k", lambda k, n: seen.append((k, n)))) == [b"ab", b"c"]
    assert seen == [("k", 2), ("k", 3)]
