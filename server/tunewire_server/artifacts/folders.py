"""Local folder moves shared by both backends: a staging folder beside the destination, filled, fsynced,
then swapped into place by rename so a reader sees the old unit, no unit, or the new one, never a mix."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from tunewire_server.artifacts.base import ObjectInfo
from tunewire_server.artifacts.errors import ArtifactCorrupt
from tunewire_server.artifacts.unit import CHUNK, MARKER, FileEntry, Hasher, fsync_path

STAGING = ".artifacts-staging"  # under a store's root or a cache root; never listed as a unit


def staging_dir(root: Path) -> Path:
    """A new, empty staging folder under `root` (same filesystem, so the final rename is atomic)."""
    path = root / STAGING / uuid.uuid4().hex
    path.mkdir(parents=True)
    return path


def write_stream(dest: Path, chunks, hasher: Hasher | None = None) -> FileEntry:
    """Write `chunks` to `dest` (parents made), fsync it; its size and sha256."""
    hasher = hasher or Hasher()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as f:
        for chunk in chunks:
            hasher.update(chunk)
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    return hasher.entry()


def file_chunks(f, chunk_size: int = CHUNK):
    """An open binary file's bytes, `chunk_size` at a time."""
    while chunk := f.read(chunk_size):
        yield chunk


def write_marker(folder: Path, raw: bytes) -> None:
    """The marker, last: every folder under `folder` fsynced, then the marker written whole (temporary
    name, fsync, rename, fsync of the folder)."""
    for sub in sorted({p for p in folder.rglob("*") if p.is_dir()} | {folder}, reverse=True):
        fsync_path(sub)
    tmp = folder / (MARKER + ".tmp")
    with open(tmp, "wb") as f:
        f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MARKER)
    fsync_path(folder)


def swap_in(staged: Path, dest: Path, root: Path) -> None:
    """Put the staged folder at `dest`, replacing what is there: the old one is renamed away first (so it
    stops being a unit at once), the new one renamed in, the old one removed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if dest.exists() or dest.is_symlink():
        old = root / STAGING / ("old-" + uuid.uuid4().hex)
        os.rename(dest, old)
    os.rename(staged, dest)
    fsync_path(dest.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_quietly(path: Path) -> None:
    """Remove a staging file or folder left by a failed step."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def write_checked(chunks: Iterator[bytes], key: str, dest: Path, expected_sha256: str | None) -> ObjectInfo:
    """Stream `chunks` into a temporary file beside `dest`, check the sha256, rename onto `dest`."""
    staged = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex}"
    try:
        entry: FileEntry = write_stream(staged, chunks)
        if expected_sha256 is not None and entry.sha256 != expected_sha256:
            raise ArtifactCorrupt(f"{key} does not match the expected sha256")
        os.replace(staged, dest)
    except BaseException:
        remove_quietly(staged)
        raise
    return ObjectInfo(key, entry.size, entry.sha256)
