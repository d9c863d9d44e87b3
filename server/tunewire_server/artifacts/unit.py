"""A unit: a folder stored whole, complete only once its marker (checkpoints.MARKER) is there, written last.

The marker is the one the training worker already writes (checkpoints.mark_complete: every file with its size
and sha256, signed with the server's key). The store uploads it as it is, last, so the signature still
verifies wherever the unit is fetched to. A folder without one gets a marker written by the store in the same
shape, unsigned ({"version", "files", "writer"}): enough for the store to verify a download, never enough for
checkpoints.verify, which wants the signature. The store itself checks sizes and sha256s, not signatures.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tunewire_server.artifacts.errors import ArtifactCorrupt
from tunewire_server.checkpoints import MARKER, VERSION

__all__ = ["MARKER", "FileEntry", "Hasher", "UnitManifest", "build_marker", "parse_marker", "unit_files"]

CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    """One file of a unit as its marker records it."""

    size: int
    sha256: str


@dataclass(frozen=True)
class UnitManifest:
    """A complete unit: its key, its files {relative path: FileEntry}, and its marker's bytes as stored."""

    key: str
    files: dict[str, FileEntry]
    marker: bytes
    step: int | None = None

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files.values())


def unit_files(folder: Path) -> list[str]:
    """Every regular file under `folder` (relative POSIX paths, sorted) but markers and their temporary
    files at any depth: the same rule checkpoints.mark_complete lists files by. Symlinks are skipped."""
    names = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        for name in files:
            path = os.path.join(root, name)
            if name in (MARKER, MARKER + ".tmp") or os.path.islink(path) or not os.path.isfile(path):
                continue
            names.append(Path(path).relative_to(folder).as_posix())
    return sorted(names)


def parse_marker(key: str, raw: bytes) -> UnitManifest:
    """The manifest a marker describes; ArtifactCorrupt when it is not a readable marker."""
    try:
        body = json.loads(raw)
        if not isinstance(body["files"], dict):
            raise TypeError("files is not a mapping")
        files = {str(name): FileEntry(int(e["size"]), str(e["sha256"])) for name, e in body["files"].items()}
        step = body.get("step")
        step = int(step) if step is not None else None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactCorrupt(f"the marker of {key} is unreadable ({type(exc).__name__})") from None
    for name in files:
        if name.startswith("/") or any(p in ("", ".", "..") for p in name.split("/")):
            raise ArtifactCorrupt(f"the marker of {key} names a file outside the unit ({name[:80]!r})")
    return UnitManifest(key, files, raw, step)


def build_marker(files: dict[str, FileEntry]) -> bytes:
    """An unsigned marker for a folder that came without one."""
    body = {"version": VERSION, "writer": "tunewire.artifacts",
            "files": {n: {"size": e.size, "sha256": e.sha256} for n, e in sorted(files.items())}}
    return json.dumps(body, sort_keys=True).encode()


class Hasher:
    """Size and sha256 of bytes seen one chunk at a time."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.size = 0

    def update(self, data) -> None:
        self._sha.update(data)
        self.size += len(data)

    def entry(self) -> FileEntry:
        return FileEntry(self.size, self._sha.hexdigest())


def hashed_chunks(path: Path, hasher: Hasher, chunk_size: int = CHUNK) -> Iterator[bytes]:
    """`path`'s bytes, `chunk_size` at a time, each fed to `hasher` on its way out."""
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            hasher.update(chunk)
            yield chunk


def check_entry(key: str, name: str, got: FileEntry, expected: FileEntry) -> None:
    """ArtifactCorrupt unless `got` (what was read or written) is what the marker records."""
    if got.size != expected.size:
        raise ArtifactCorrupt(f"{name} of {key} has {got.size} bytes, not the {expected.size} its marker records")
    if got.sha256 != expected.sha256:
        raise ArtifactCorrupt(f"{name} of {key} does not match the sha256 its marker records")


def folder_marker(folder: Path, key: str) -> UnitManifest | None:
    """The manifest of the marker `folder` already holds, or None when it has none."""
    try:
        raw = (folder / MARKER).read_bytes()
    except FileNotFoundError:
        return None
    return parse_marker(key, raw)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def reporting(chunks: Iterator[bytes], key: str, progress) -> Iterator[bytes]:
    """`chunks` passed through, `progress(key, bytes so far)` called after each (it may raise to abort)."""
    done = 0
    for chunk in chunks:
        yield chunk
        done += len(chunk)
        if progress is not None:
            progress(key, done)
