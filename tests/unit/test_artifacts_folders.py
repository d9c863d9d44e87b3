"""Local folder moves: a staged folder swapped into place whole, a file written through a temporary one."""

from __future__ import annotations

import hashlib

import pytest

from tunewire_server.artifacts.errors import ArtifactCorrupt
from tunewire_server.artifacts.folders import STAGING, staging_dir, swap_in, write_checked, write_marker
from tunewire_server.artifacts.unit import MARKER


def test_swap_in_replaces_the_old_folder_whole(tmp_path):
    dest = tmp_path / "units" / "u"
    dest.mkdir(parents=True)
    (dest / "old.txt").write_text("old")
    staged = staging_dir(tmp_path)
    (staged / "new.txt").write_text("new")
    write_marker(staged, b"{}")
    swap_in(staged, dest, tmp_path)
    assert sorted(p.name for p in dest.iterdir()) == sorted([MARKER, "new.txt"])
    assert list((tmp_path / STAGING).iterdir()) == []  # the old one is gone, nothing staged is left


def test_write_checked_renames_only_a_matching_file(tmp_path):
    dest = tmp_path / "f.bin"
    info = write_checked(iter([b"ab", b"cd"]), "k", dest, hashlib.sha256(b"abcd").hexdigest())
    assert dest.read_bytes() == b"abcd" and info.size == 4
    with pytest.raises(ArtifactCorrupt):
        write_checked(iter([b"zz"]), "k", dest, "0" * 64)
    assert dest.read_bytes() == b"abcd"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
