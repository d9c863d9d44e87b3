"""Uploads: a client declares a file (name, format, size, sha256) under an upload id it chose, then sends
its bytes in order, in one stream or several. The bytes go to a partial file under the upload dir,
hashed as they arrive. When the last byte is there and the stream ends, the file is fsynced, its size and
sha256 checked, its report built, and it is made visible by one rename to its content address; only then
is its record stored. Whatever goes wrong on the way leaves nothing visible:

- a broken stream (or one that ends early) keeps the partial file and the declared upload, so the same
  upload id resumes from the offset held (`start` says which);
- a wrong sha256, a chunk past the declared size, a file that does not parse in its format, the size cap
  or the free-disk floor remove the partial upload, and the error says what went wrong.

The same bytes uploaded again (any name, any upload id) return the stored dataset: `start` says so
before a byte is sent, and a finished upload of stored content is dropped rather than stored twice.

One upload is written by one stream at a time: a stream that opens an upload takes it over, and a
stream left behind (a connection the server has not yet seen die) is refused its next chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunewire_server.artifacts import ArtifactError
from tunewire_server.config import Settings
from tunewire_server.datasets import arrival, layout
from tunewire_server.datasets.arrival import ArrivalCheck, CheckFailed
from tunewire_server.datasets.report import DatasetProblem, build_report
from tunewire_server.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidSpec,
    ResourceExhausted,
    Unavailable,
)
from tunewire_server.shared_store import dataset_key, open_shared
from tunewire_server.store import DatasetRecord, Store, UploadRecord, is_disk_full

MB = 1024 * 1024
MESSAGE_HEADROOM = 64 * 1024  # a chunk's message carries a little more than its data
HASH_BLOCK = 1 * MB


def disk_free(path: Path) -> int:
    """Free bytes on the file system holding `path` (a very large number if it cannot be told)."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 1 << 62


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hash_file(path: Path, size: int):
    """A sha256 object fed with the first `size` bytes of `path`, read in blocks."""
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while left > 0:
            block = f.read(min(HASH_BLOCK, left))
            if not block:
                break
            hasher.update(block)
            left -= len(block)
    return hasher


async def _settled(coro):
    """Await `coro` (file work on a thread); if the caller is cancelled meanwhile (the client went away),
    wait for that work to end before the cancellation goes on, so nothing writes the file after the
    stream let go of it."""
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


@dataclass
class StartResult:
    """Where an upload stands: the offset to send from, or the stored dataset (nothing to send)."""

    offset: int
    dataset: DatasetRecord | None = None


class _Session:
    """The server's live state of one upload in progress (rebuilt from the partial file after a restart)."""

    def __init__(self, record: UploadRecord, path: Path) -> None:
        self.record = record
        self.path = path
        self.held = path.stat().st_size if path.exists() else 0
        self.hasher = None  # sha256 of the bytes held; built when a stream first writes
        self.file = None  # open for appending while a stream writes
        self.check: ArrivalCheck | None = None  # the report being built as the bytes arrive (arrival.py)
        self.owner = 0  # the stream that may write: each opening stream takes the next number
        self.lock = asyncio.Lock()


class Uploads:
    """Uploads in progress and their completion into stored datasets (see the module docstring)."""

    def __init__(self, settings: Settings, store: Store, free_bytes: Callable[[Path], int] = disk_free) -> None:
        self.settings = settings
        self.store = store
        self.free_bytes = free_bytes
        self.partial_dir = layout.partial_dir(settings.upload_dir)
        self.datasets_dir = layout.datasets_dir(settings.upload_dir)
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        self.datasets_dir.mkdir(parents=True, exist_ok=True)
        self._sessions: dict[str, _Session] = {}
        self._remove_unrecorded()

    def _remove_unrecorded(self) -> None:
        """At start: a stored file without its record (the server died between the rename and the store
        write) is removed, so no job can use a dataset that ListDatasets does not show."""
        for path in self.datasets_dir.iterdir():
            sha256, _, fmt = path.name.partition(".")
            if fmt in layout.FORMATS and self.store.get_dataset(layout.dataset_id(sha256)) is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    @property
    def chunk_limit(self) -> int:
        return max(1, min(self.settings.max_upload_chunk_bytes, self.settings.max_message_bytes - MESSAGE_HEADROOM))

    # --- the header ---------------------------------------------------------------------------------

    def check_header(self, upload_id: str, name: str, fmt: str | None, size: int, sha256: str,
                     label_column: str = "") -> UploadRecord:
        """The declared upload, checked: InvalidSpec naming the header field at fault; ResourceExhausted
        when the size is past the cap."""
        layout.check_upload_id(upload_id)
        layout.check_name(name)
        fmt = layout.format_of(name, fmt)
        sha256 = layout.check_sha256(sha256)
        layout.check_label_column(label_column, "header.label_column")
        if size < 1:
            raise InvalidSpec(FieldViolation("header.size_bytes", "must be at least 1 (the file's size in bytes)"))
        if size > self.settings.max_upload_bytes:
            raise ResourceExhausted(f"header.size_bytes: {size} bytes is more than this server accepts "
                                    f"(max_upload_bytes {self.settings.max_upload_bytes})")
        return UploadRecord(upload_id, name, fmt, size, sha256, label_column, time.time())

    # --- starting and resuming ----------------------------------------------------------------------

    async def start(self, header: UploadRecord) -> StartResult:
        """Begin the upload, or find the one begun with this upload id: the offset it holds, or the stored
        dataset when these bytes are stored already (then the upload, if any, is dropped)."""
        existing = self._stored(header)
        if existing is not None:
            await self._remove(header.upload_id)
            return StartResult(existing.size, existing)
        session = await self._session(header)
        await self._check_room(session, session.record.size - session.held)
        return StartResult(session.held)

    async def open(self, header: UploadRecord) -> UploadStream:
        """A stream's hold on the upload (begun now if it was not): it may write until another opens it."""
        existing = self._stored(header)
        if existing is not None:
            await self._remove(header.upload_id)
            return UploadStream(self, None, 0, existing)
        session = await self._session(header)
        await self._check_room(session, session.record.size - session.held)
        session.owner += 1
        return UploadStream(self, session, session.owner)

    def _stored(self, header: UploadRecord) -> DatasetRecord | None:
        """The stored dataset with the header's sha256, if any; InvalidSpec if its size is not the declared
        one (no file has two sizes)."""
        existing = self.store.get_dataset(layout.dataset_id(header.sha256))
        if existing is not None and existing.size != header.size:
            raise InvalidSpec(FieldViolation(
                "header.size_bytes", f"is {header.size}, but the stored file with this sha256 is {existing.size} "
                                     "bytes: size_bytes or sha256 is wrong"))
        return existing

    async def _session(self, header: UploadRecord) -> _Session:
        stored = await self.store.write(self.store.begin_upload, header)
        if (stored.name, stored.format, stored.size, stored.sha256, stored.label_column) != \
                (header.name, header.format, header.size, header.sha256, header.label_column):
            raise InvalidSpec(FieldViolation(
                "header.upload_id", "names an upload begun with another name, format, size, sha256 or label "
                                    "column; use a new upload id for other content"))
        session = self._sessions.get(header.upload_id)
        if session is None:
            session = self._sessions[header.upload_id] = _Session(stored, layout.partial_path(
                self.settings.upload_dir, header.upload_id))
        return session

    async def _check_room(self, session: _Session, incoming: int) -> None:
        """ResourceExhausted (after removing the partial upload) unless `incoming` more bytes leave the
        data disk above min_free_disk_mb."""
        floor = self.settings.min_free_disk_mb * MB
        free = self.free_bytes(self.partial_dir)
        if free - incoming < floor:
            await self.discard(session)
            raise ResourceExhausted(
                f"the server's upload disk has {free // MB} MB free; {incoming} more bytes would leave less than "
                f"the {self.settings.min_free_disk_mb} MB it keeps free (min_free_disk_mb); the partial upload "
                "was removed")

    # --- removing -----------------------------------------------------------------------------------

    def _drop(self, session: _Session) -> None:
        """Forget a session's live state and delete its partial file (the record goes in _remove)."""
        self._sessions.pop(session.record.upload_id, None)
        session.owner = -1  # no stream may write any more
        _stop_check(session)
        if session.file is not None:
            with contextlib.suppress(OSError):
                session.file.close()
            session.file = None
        with contextlib.suppress(FileNotFoundError):
            session.path.unlink()
        session.held = 0

    async def _remove(self, upload_id: str) -> None:
        session = self._sessions.get(upload_id)
        if session is not None:
            self._drop(session)
        else:
            with contextlib.suppress(FileNotFoundError):
                layout.partial_path(self.settings.upload_dir, upload_id).unlink()
        if self.store.get_upload(upload_id) is not None:
            await self.store.write(self.store.delete_upload, upload_id)

    async def discard(self, session: _Session) -> None:
        self._drop(session)
        await self.store.write(self.store.delete_upload, session.record.upload_id)


def _stop_check(session: _Session) -> None:
    check, session.check = session.check, None
    if check is not None:
        check.abandon()


class UploadStream:
    """One UploadDataset stream's hold on an upload: `write` each chunk, then `finish`; `release` when the
    stream breaks (the bytes held stay for a resume)."""

    def __init__(self, uploads: Uploads, session: _Session | None, token: int,
                 existing: DatasetRecord | None = None) -> None:
        self.uploads = uploads
        self.session = session
        self.token = token
        self.existing = existing  # the content is stored already: chunks are read and ignored

    @property
    def offset(self) -> int:
        return self.session.held if self.session is not None else 0

    def _own(self) -> _Session:
        session = self.session
        assert session is not None
        if session.owner != self.token:
            raise FailedPrecondition("another UploadDataset stream took over this upload (the same upload id), "
                                     "or the upload was removed; this stream may send no more")
        return session

    async def write(self, offset: int, data: bytes) -> None:
        """Append one chunk at `offset`, which must be the offset held (see the module docstring)."""
        if self.existing is not None:
            return
        session = self._own()
        uploads, size = self.uploads, session.record.size
        if len(data) > uploads.chunk_limit:
            raise InvalidSpec(FieldViolation("chunk.data", f"is {len(data)} bytes; a chunk carries at most "
                                                           f"{uploads.chunk_limit} (max_upload_chunk_bytes)"))
        async with session.lock:
            session = self._own()
            if offset != session.held:
                raise InvalidSpec(FieldViolation(
                    "chunk.offset", f"is {offset}, but the server holds {session.held} bytes of this upload: "
                                    f"send from offset {session.held}"))
            if offset + len(data) > size:
                await uploads.discard(session)
                where = ("chunk.offset", f"is {offset}: the declared size_bytes {size} has been received, and no "
                                         "chunk may follow the last byte") if offset >= size else \
                    ("chunk.data", f"ends at byte {offset + len(data)}, past the declared size_bytes {size}")
                raise InvalidSpec(FieldViolation(where[0], where[1] + "; the partial upload was removed"))
            if not data:
                return
            await uploads._check_room(session, len(data))
            try:
                await _settled(asyncio.to_thread(self._append, session, data))
            except OSError as exc:
                await uploads.discard(session)
                if is_disk_full(exc):
                    raise ResourceExhausted("the server's upload disk is full; the partial upload was removed") from None
                raise

    @staticmethod
    def _append(session: _Session, data: bytes) -> None:
        if session.hasher is None:  # first write since the server (re)built the session
            session.hasher = _hash_file(session.path, session.held) if session.held else hashlib.sha256()
        if session.file is None:
            session.path.parent.mkdir(parents=True, exist_ok=True)
            session.file = open(session.path, "ab")  # noqa: SIM115 - kept open across the stream's chunks
            if session.file.tell() != session.held:  # a partial file longer than what was hashed: cut it back
                session.file.truncate(session.held)
            if session.check is None and arrival.streams(session.record.format, session.record.size):
                session.check = ArrivalCheck(session.path, session.record.format, session.record.label_column)
                session.check.grow(session.held)
        session.file.write(data)
        session.file.flush()  # the arrival check reads the file through another descriptor
        session.hasher.update(data)
        session.held += len(data)
        if session.check is not None:
            session.check.grow(session.held)

    def release(self) -> None:
        """The stream broke: close the file, keep the bytes held."""
        session = self.session
        if session is None or session.owner != self.token or session.file is None:
            return
        _stop_check(session)  # a resume starts another from the first byte
        with contextlib.suppress(OSError):
            session.file.close()
        session.file = None

    async def finish(self) -> DatasetRecord:
        """The stream ended: check size and sha256, build the report, rename into place, store the record."""
        if self.existing is not None:
            return self.existing
        uploads = self.uploads
        async with self._own().lock:
            session = self._own()
            record = session.record
            if session.held < record.size:
                self.release()
                raise FailedPrecondition(
                    f"the stream ended after {session.held} of the declared {record.size} bytes (header.size_bytes); "
                    f"the bytes held are kept: send the rest from offset {session.held} with the same upload id")
            report = None
            if session.check is not None:  # the check reads its last rows while the file is fsynced
                digest, report = await _settled(asyncio.gather(asyncio.to_thread(self._seal, session),
                                                               asyncio.to_thread(self._report_or_problem, session)))
            else:  # a pass over the whole file: only once its sha256 matches
                digest = await _settled(asyncio.to_thread(self._seal, session))
            if digest != record.sha256:
                await uploads.discard(session)
                raise InvalidSpec(FieldViolation(
                    "header.sha256", f"the {record.size} bytes received hash to {digest}, not the declared "
                                     f"{record.sha256}; nothing was kept"))
            if report is None:
                report = await _settled(asyncio.to_thread(self._report_or_problem, session))
            if isinstance(report, DatasetProblem):
                await uploads.discard(session)
                raise InvalidSpec(FieldViolation(
                    "header.format", f"the file does not parse as {record.format.upper()}: {report}; nothing was kept"
                ))
            dataset_id = layout.dataset_id(record.sha256)
            existing = uploads.store.get_dataset(dataset_id)
            if existing is not None:  # stored by another upload meanwhile: once is enough
                await uploads.discard(session)
                return existing
            await _settled(self._share(session))
            # From the rename on, the work completes even if the client goes away meanwhile: a file made
            # visible is always recorded (and a resume then finds the stored dataset).
            return await _settled(self._complete(session, dataset_id, report.to_json()))

    async def _share(self, session: _Session) -> None:
        """With a shared artifact store, the verified file goes there before it is made visible here, so every
        replica that sees the dataset's record can fetch it. The store unreachable: UNAVAILABLE, and the bytes
        held are kept (the same upload id finishes later without sending them again)."""
        store = open_shared(self.uploads.settings)
        if store is None:
            return
        record = session.record
        key = dataset_key(layout.stored_file_name(record.sha256, record.format))
        try:
            await asyncio.to_thread(store.put_file, key, session.path)
        except ArtifactError as exc:
            raise Unavailable(f"the shared artifact store cannot take the dataset now ({type(exc).__name__}); "
                              "the bytes are kept: finish the same upload id again later") from None

    async def _complete(self, session: _Session, dataset_id: str, report_json: str) -> DatasetRecord:
        uploads, record = self.uploads, session.record
        file_name = layout.stored_file_name(record.sha256, record.format)
        await asyncio.to_thread(self._publish, session, uploads.datasets_dir / file_name)
        uploads._sessions.pop(record.upload_id, None)
        session.owner = -1
        return await uploads.store.write(uploads.store.add_dataset, dataset_id, record.name, record.format,
                                         record.size, record.sha256, file_name, report_json, record.upload_id)

    @classmethod
    def _report_or_problem(cls, session: _Session):
        """_report, or the DatasetProblem it raised (returned, so that it waits beside the seal)."""
        try:
            return cls._report(session)
        except DatasetProblem as exc:
            return exc

    @staticmethod
    def _report(session: _Session):
        """The report of the sealed file: the arrival check's (its last rows read now), or one pass over the
        file when no check ran (Parquet, or a file whose bytes all came before a restart)."""
        check, session.check = session.check, None
        record = session.record
        if check is not None:
            with contextlib.suppress(CheckFailed):
                return check.result()
        return build_report(session.path, record.format, record.label_column)

    @staticmethod
    def _seal(session: _Session) -> str:
        """fsync the partial file and close it; its sha256 (hashed again from disk after a restart)."""
        if session.file is not None:
            session.file.flush()
            os.fsync(session.file.fileno())
            session.file.close()
            session.file = None
        else:  # written by an earlier stream, which closed it without an fsync
            fd = os.open(session.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if session.hasher is None:
            session.hasher = _hash_file(session.path, session.held)
        return session.hasher.hexdigest()

    @staticmethod
    def _publish(session: _Session, target: Path) -> None:
        os.replace(session.path, target)  # the one step that makes it visible
        _fsync_dir(target.parent)
