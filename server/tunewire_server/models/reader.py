"""Reading a download's files: chunks from an offset, never a whole file in memory, never outside the folder.

Only files named in the manifest are read. The manifest's root is opened as a directory without following
a symlink (O_DIRECTORY | O_NOFOLLOW), and each file is opened relative to it, again without following a
symlink, and must still be a regular file of the manifest's size: a file swapped for a symlink (to
/etc/shadow, to another job) after verification is refused, not followed. A file already open is read to
its end even if the job is deleted meanwhile (the data stays until closed); a file not yet opened when the
job's folder went away ends the download with NotFound.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass

from tunewire_server.errors import FailedPrecondition, FieldViolation, InvalidSpec, NotFound, preview
from tunewire_server.models.manifest import Manifest

DEFAULT_CHUNK = 1 << 20  # 1 MiB: big enough for disk and gRPC throughput, small enough for any message limit
MAX_CHUNK = 4 << 20


@dataclass(frozen=True)
class DownloadChunk:
    """One message of a download stream: `data` is the file's bytes from `offset`."""

    path: str
    offset: int
    data: bytes
    size: int  # the whole file's size
    sha256: str  # the whole file's sha256
    last: bool  # the file's last chunk (sent for an empty file too, with no data)


def _open_root(manifest: Manifest) -> int:
    try:
        return os.open(manifest.root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise NotFound(f"job {manifest.job_id}'s {manifest.which.name} is gone (deleted or pruned)") from None
    except OSError as exc:
        raise FailedPrecondition(f"job {manifest.job_id}'s {manifest.which.name} cannot be read "
                                 f"({exc.strerror or type(exc).__name__})") from None


def _open_file(manifest: Manifest, root_fd: int, path: str, size: int) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=root_fd)
    except FileNotFoundError:
        raise NotFound(f"{path} of job {manifest.job_id}'s {manifest.which.name} is gone (deleted or pruned)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FailedPrecondition(f"{path} of job {manifest.job_id} is a symbolic link now; not sent") from None
        raise FailedPrecondition(f"{path} of job {manifest.job_id} cannot be read "
                                 f"({exc.strerror or type(exc).__name__})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        os.close(fd)
        raise FailedPrecondition(f"{path} of job {manifest.job_id} changed since it was verified; not sent")
    return fd


def check_request(manifest: Manifest, path: str, offset: int) -> None:
    """InvalidSpec unless `path` is a file of the manifest and 0 <= offset <= its size."""
    entry = manifest.entry(path)
    if entry is None:
        raise InvalidSpec(FieldViolation("path", f"{preview(path)} is not a file of this download"))
    if not 0 <= offset <= entry.size:
        raise InvalidSpec(FieldViolation("offset", f"must be between 0 and {entry.size} for {entry.path}, "
                                                   f"not {offset}"))


def read_chunks(manifest: Manifest, path: str, offset: int = 0, chunk_size: int = DEFAULT_CHUNK) -> Iterator[bytes]:
    """The bytes of one manifest file from `offset` to its end, `chunk_size` at a time (at most MAX_CHUNK)."""
    check_request(manifest, path, offset)
    for chunk in _chunks(manifest, path, offset, chunk_size):
        yield chunk.data


def _chunks(manifest: Manifest, path: str, offset: int, chunk_size: int, root_fd: int | None = None
            ) -> Iterator[DownloadChunk]:
    entry = manifest.entry(path)
    assert entry is not None
    chunk_size = max(1, min(chunk_size, MAX_CHUNK))
    own_root = root_fd is None
    if root_fd is None:
        root_fd = _open_root(manifest)
    try:
        fd = _open_file(manifest, root_fd, path, entry.size)
    finally:
        if own_root:
            os.close(root_fd)
    try:
        position = offset
        while True:
            data = os.pread(fd, min(chunk_size, entry.size - position), position) if position < entry.size else b""
            if position < entry.size and not data:
                raise FailedPrecondition(f"{path} of job {manifest.job_id} shrank while it was read")
            position += len(data)
            yield DownloadChunk(path, position - len(data), data, entry.size, entry.sha256, position >= entry.size)
            if position >= entry.size:
                return
    finally:
        os.close(fd)


def download_chunks(manifest: Manifest, offsets: Mapping[str, int] | None = None,
                    chunk_size: int = DEFAULT_CHUNK) -> Iterator[DownloadChunk]:
    """Every file of the manifest in order, each from its offset in `offsets` (0 when absent; a file
    already whole at the client, offset == size, is sent as one empty last chunk). Resuming a broken download
    is asking again with the offsets the client holds."""
    offsets = dict(offsets or {})
    for path, offset in offsets.items():
        check_request(manifest, path, offset)
    root_fd = _open_root(manifest)
    with contextlib.ExitStack() as stack:
        stack.callback(os.close, root_fd)
        for entry in manifest.files:
            yield from _chunks(manifest, entry.path, offsets.get(entry.path, 0), chunk_size, root_fd)


async def stream_chunks(manifest: Manifest, offsets: Mapping[str, int] | None = None,
                        chunk_size: int = DEFAULT_CHUNK) -> AsyncIterator[DownloadChunk]:
    """download_chunks for the event loop: each chunk is read in a thread, so a slow disk never blocks the
    loop, and the next one only when the consumer (a gRPC stream, with its flow control) asks for it.
    Closing this iterator closes the files."""
    chunks = download_chunks(manifest, offsets, chunk_size)
    done = object()
    try:
        while (chunk := await asyncio.to_thread(next, chunks, done)) is not done:
            yield chunk
    finally:
        await asyncio.to_thread(chunks.close)
