"""The ArtifactStore protocol: what the service keeps outside its database (checkpoints, final models,
uploaded datasets, logs), in a local folder or in S3-compatible object storage.

Two kinds of things are stored under keys (clean relative paths, keys.py):

- units: a folder put whole (checkpoint-N/, model/). Every file goes first, the completeness marker last
  (unit.py); a unit without its marker is never listed, fetched or reported as existing. Fetching one
  copies it into a local cache folder through a temporary folder and one rename, each file checked against
  the marker's size and sha256 on the way.
- files: one object (an uploaded dataset, a log), streamed in and out, never held in memory; large ones go
  up as a multipart upload.

Every method is blocking (the control plane calls them through asyncio.to_thread) and safe to call from
several threads at once. Errors are the artifacts.errors types.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from tunewire_server.artifacts.unit import UnitManifest

# Called after each file of a unit (its relative path, its size) and after each part of a single file (the key,
# the bytes sent so far). Raising from it aborts the put, and nothing is marked complete: a drain or a cancel
# stops an upload this way.
Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class ObjectInfo:
    """A stored file: its key, size and (where it was computed, on put or get) sha256."""

    key: str
    size: int
    sha256: str | None = None


@runtime_checkable
class ArtifactReader(Protocol):
    """An open stored file for ranged reads; only what is asked for is read, nothing held in memory."""

    size: int

    def read(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset` (fewer only at the end of the file; b"" at or past it)."""

    def chunks(self, offset: int = 0, length: int | None = None, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The bytes from `offset` (to the end, or `length` of them), at most `chunk_size` at a time."""

    def close(self) -> None: ...

    def __enter__(self) -> ArtifactReader: ...

    def __exit__(self, *exc) -> None: ...


@runtime_checkable
class ArtifactStore(Protocol):
    """Where artifacts live. `url` says which store it is (a folder path or s3://bucket/prefix)."""

    url: str

    def put_unit(self, folder: Path, key: str, *, progress: Progress | None = None) -> UnitManifest:
        """Store `folder` as the unit `key`, replacing any unit there: every file, then its marker (the
        folder's own, as it is, or one the store writes). Until the marker is stored, `key` is not a complete
        unit (a replaced unit stops being one before its files are touched)."""

    def get_unit(self, key: str, cache_root: Path) -> Path:
        """A local folder holding the complete unit `key`, each file checked against its marker: for a local
        store the unit's own folder (no copy), else cache_root/<key>, filled through a temporary folder and
        one rename, and reused while its marker is the stored one. ArtifactNotFound without a marker."""

    def manifest(self, key: str) -> UnitManifest:
        """The marker of the complete unit `key` (ArtifactNotFound when there is none)."""

    def list_units(self, prefix: str = "") -> list[str]:
        """The keys of the complete units at or under `prefix`, sorted (units without a marker left out)."""

    def put_file(self, key: str, source: Path | BinaryIO, *, progress: Progress | None = None) -> ObjectInfo:
        """Store one file, streamed (multipart above the part size); it appears whole or not at all."""

    def get_file(self, key: str, dest: Path, *, expected_sha256: str | None = None) -> ObjectInfo:
        """Write the file `key` to `dest` through a temporary file and a rename (checked against
        `expected_sha256` when given: ArtifactCorrupt, and `dest` untouched, when it differs)."""

    def fetch_file(self, key: str, cache_root: Path) -> Path:
        """A local path holding the file `key`: the stored file itself for a local store, else
        cache_root/<key>, downloaded when missing or of another size."""

    def open_file(self, key: str) -> ArtifactReader:
        """The file `key` opened for ranged reads (ArtifactNotFound when there is none)."""

    def stat(self, key: str) -> ObjectInfo:
        """The file `key`'s size (ArtifactNotFound when there is none)."""

    def exists(self, key: str) -> bool:
        """Whether `key` is a stored file or a complete unit."""

    def delete_prefix(self, prefix: str) -> int:
        """Delete everything at or under `prefix` (whole path segments), markers first so no unit looks
        complete while its files go; the number of stored files removed. An empty prefix is refused."""

    def check(self) -> None:
        """Write, read and delete a probe object: ArtifactStoreMisconfigured or ArtifactStoreUnavailable,
        with a clear message, when the store cannot be used (call it at startup)."""
