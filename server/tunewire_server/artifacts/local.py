"""The folder backend (the default, one box): artifacts are files under a root folder, keys are paths.

A unit already in place (the worker wrote checkpoint-N/ under the root) is stored without a copy: its
marker, already there, is what makes it complete, as today. A unit from elsewhere is copied into a staging
folder under the root, marked, and renamed into place, so it appears whole. Fetching a unit returns its own
folder (no copy); only its file list and sizes are checked against the marker there, since hashing a whole
model on every load is what models/verified.py's cache exists to avoid (checkpoints.verify still hashes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from tunewire_server.artifacts.base import ObjectInfo, Progress
from tunewire_server.artifacts.errors import (
    ArtifactCorrupt,
    ArtifactKeyError,
    ArtifactNotFound,
    ArtifactStoreMisconfigured,
)
from tunewire_server.artifacts.folders import (
    STAGING,
    file_chunks,
    remove_quietly,
    staging_dir,
    swap_in,
    write_checked,
    write_marker,
    write_stream,
)
from tunewire_server.artifacts.keys import check_key
from tunewire_server.artifacts.unit import (
    CHUNK,
    MARKER,
    Hasher,
    UnitManifest,
    build_marker,
    check_entry,
    folder_marker,
    hashed_chunks,
    parse_marker,
    reporting,
    unit_files,
)


class LocalReader:
    """A stored file held open by descriptor: ranged reads with pread; a file deleted while open stays
    readable to its end."""

    def __init__(self, fd: int, key: str) -> None:
        self._fd = fd
        self.key = key
        self.size = os.fstat(fd).st_size

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        return os.pread(self._fd, min(length, max(0, self.size - offset)), offset) if length else b""

    def chunks(self, offset: int = 0, length: int | None = None, chunk_size: int = CHUNK) -> Iterator[bytes]:
        end = self.size if length is None else min(self.size, offset + length)
        while offset < end:
            data = self.read(offset, min(chunk_size, end - offset))
            if not data:
                raise ArtifactCorrupt(f"{self.key} shrank while it was read")
            offset += len(data)
            yield data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> LocalReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalArtifactStore:
    """Artifacts under `root` (created on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def __repr__(self) -> str:
        return f"LocalArtifactStore({self.url!r})"

    def path(self, key: str) -> Path:
        """Where `key` lives on disk (the no-copy route for callers that need a path)."""
        key = check_key(key)
        if key.split("/")[0] == STAGING:
            raise ArtifactKeyError(f"{STAGING} is the store's own folder, not a key")
        return self.root / key

    # units

    def put_unit(self, folder: Path, key: str, *, progress: Progress | None = None) -> UnitManifest:
        key = check_key(key)
        dest = self.path(key)
        folder = Path(folder)
        if not folder.is_dir():
            raise ArtifactNotFound(f"no folder {folder} to store as {key}")
        names = unit_files(folder)
        own = folder_marker(folder, key)
        if own is not None and sorted(own.files) != names:
            raise ArtifactCorrupt(f"the folder for {key} holds other files than its marker lists")
        if dest.exists() and folder.resolve() == dest.resolve():
            return self._mark_in_place(dest, key, names, own, progress)
        staged = staging_dir(self.root)
        try:
            entries = {}
            for name in names:
                with open(folder / name, "rb") as f:
                    entry = write_stream(staged / name, file_chunks(f))
                if own is not None:
                    check_entry(key, name, entry, own.files[name])
                entries[name] = entry
                if progress is not None:
                    progress(name, entry.size)
            raw = own.marker if own is not None else build_marker(entries)
            write_marker(staged, raw)
            swap_in(staged, dest, self.root)
        except BaseException:
            remove_quietly(staged)
            raise
        return parse_marker(key, raw)

    def _mark_in_place(self, folder: Path, key: str, names: list[str], own: UnitManifest | None,
                       progress: Progress | None) -> UnitManifest:
        if own is not None:  # the worker's marker is already there: that is what makes it complete
            self._check_sizes(folder, own)
            return own
        entries = {}
        for name in names:
            hasher = Hasher()
            for _ in hashed_chunks(folder / name, hasher):
                pass
            entries[name] = hasher.entry()
            if progress is not None:
                progress(name, entries[name].size)
        raw = build_marker(entries)
        write_marker(folder, raw)
        return parse_marker(key, raw)

    @staticmethod
    def _check_sizes(folder: Path, manifest: UnitManifest) -> None:
        if unit_files(folder) != sorted(manifest.files):
            raise ArtifactCorrupt(f"the files of {manifest.key} differ from its marker")
        for name, entry in manifest.files.items():
            size = (folder / name).stat().st_size
            if size != entry.size:
                raise ArtifactCorrupt(f"{name} of {manifest.key} has {size} bytes, not the {entry.size} "
                                      f"its marker records")

    def manifest(self, key: str) -> UnitManifest:
        key = check_key(key)
        marker = self.path(key) / MARKER
        try:
            if not stat.S_ISREG(os.lstat(marker).st_mode):
                raise FileNotFoundError(marker)
            raw = marker.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise ArtifactNotFound(f"no complete unit at {key}") from None
        return parse_marker(key, raw)

    def get_unit(self, key: str, cache_root: Path) -> Path:
        manifest = self.manifest(key)
        folder = self.path(manifest.key)
        self._check_sizes(folder, manifest)
        return folder

    def list_units(self, prefix: str = "") -> list[str]:
        prefix = check_key(prefix, allow_empty=True)
        base = self.path(prefix) if prefix else self.root
        found = []
        for root, dirs, files in os.walk(base):
            if Path(root) == self.root:
                dirs[:] = [d for d in dirs if d != STAGING]
            if MARKER in files and not os.path.islink(os.path.join(root, MARKER)):
                found.append(Path(root).relative_to(self.root).as_posix())
        return sorted(k for k in found if k != ".")

    # files

    def put_file(self, key: str, source: Path | BinaryIO, *, progress: Progress | None = None) -> ObjectInfo:
        key = check_key(key)
        dest = self.path(key)
        staged = self.root / STAGING / f"file-{uuid.uuid4().hex}"
        try:
            with contextlib.ExitStack() as stack:
                f = stack.enter_context(open(source, "rb")) if isinstance(source, (str, Path)) else source
                entry = write_stream(staged, reporting(file_chunks(f), key, progress))
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, dest)
        except BaseException:
            remove_quietly(staged)
            raise
        return ObjectInfo(key, entry.size, entry.sha256)

    def get_file(self, key: str, dest: Path, *, expected_sha256: str | None = None) -> ObjectInfo:
        with self.open_file(key) as reader:
            return write_checked(reader.chunks(), reader.key, Path(dest), expected_sha256)

    def fetch_file(self, key: str, cache_root: Path) -> Path:
        self.stat(key)
        return self.path(key)

    def open_file(self, key: str) -> LocalReader:
        key = check_key(key)
        try:
            fd = os.open(self.path(key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            raise ArtifactNotFound(f"no file at {key}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ArtifactNotFound(f"no file at {key} (a folder)")
        return LocalReader(fd, key)

    def stat(self, key: str) -> ObjectInfo:
        key = check_key(key)
        try:
            st = os.stat(self.path(key))
        except (FileNotFoundError, NotADirectoryError):
            raise ArtifactNotFound(f"no file at {key}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactNotFound(f"no file at {key} (a folder)")
        return ObjectInfo(key, st.st_size)

    def exists(self, key: str) -> bool:
        path = self.path(key)
        return path.is_file() or (path / MARKER).is_file()

    def delete_prefix(self, prefix: str) -> int:
        prefix = check_key(prefix)
        path = self.path(prefix)
        if path.is_dir() and not path.is_symlink():
            trash = self.root / STAGING / ("old-" + uuid.uuid4().hex)
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, trash)  # every unit in it stops being one at once
            count = sum(len(files) for _, _, files in os.walk(trash))
            shutil.rmtree(trash, ignore_errors=True)
            return count
        try:
            path.unlink()
        except FileNotFoundError:
            return 0
        return 1

    def check(self) -> None:
        probe = self.root / STAGING / f"probe-{uuid.uuid4().hex}"
        try:
            probe.parent.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"tunewire")
            ok = probe.read_bytes() == b"tunewire"
            probe.unlink()
        except OSError as exc:
            raise ArtifactStoreMisconfigured(f"the artifact folder {self.root} cannot be written "
                                             f"({exc.strerror or type(exc).__name__})") from None
        if not ok:
            raise ArtifactStoreMisconfigured(f"the artifact folder {self.root} did not read back what was written")

