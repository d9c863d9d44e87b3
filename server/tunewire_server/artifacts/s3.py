"""The S3-compatible backend (many replicas, one bucket), through obstore.

Why obstore (the Python face of the Rust `object_store` crate that Arrow, Polars and DataFusion use) rather
than s3fs/fsspec or boto3: one wheel with no Python dependencies and a light import (the control plane stays
lean; boto3 + botocore cost ~100 ms and tens of MB, s3fs adds aiobotocore/aiohttp with tight botocore pins);
its S3 client retries connection errors, 5xx and timeouts with exponential backoff and jitter on its own,
bounded by a count and a total time we set; `put` streams a file or an iterator as a multipart upload with a
set part size and concurrency and aborts it on failure (no half object ever becomes visible); ranged GETs
with If-Match tell a file replaced mid-download; and it reads the standard AWS_* variables (credentials,
region, endpoint, web identity on Kubernetes) itself. Its sync calls release the GIL.

Completeness on a store without renames: each file of a unit is uploaded, then the marker object, last; the
marker of a unit being replaced is deleted before any of its files is touched. A unit is listed or fetched
only by its marker. S3 writes are atomic per object and read-after-write consistent, which this relies on.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

import obstore
from obstore.exceptions import (
    BaseError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from tunewire_server.artifacts.base import ObjectInfo, Progress
from tunewire_server.artifacts.errors import (
    ArtifactCorrupt,
    ArtifactNotFound,
    ArtifactStoreMisconfigured,
    ArtifactStoreUnavailable,
)
from tunewire_server.artifacts.folders import (
    STAGING,
    remove_quietly,
    staging_dir,
    swap_in,
    write_checked,
    write_marker,
    write_stream,
)
from tunewire_server.artifacts.keys import check_key, is_under
from tunewire_server.artifacts.unit import (
    CHUNK,
    MARKER,
    FileEntry,
    Hasher,
    UnitManifest,
    build_marker,
    check_entry,
    folder_marker,
    parse_marker,
    reporting,
    unit_files,
)

MIN_PART = 5 << 20  # S3's smallest part (all but the last); settings should not go below it
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys


@dataclass(frozen=True)
class S3Options:
    """How to reach the bucket. Credentials left None come from the standard AWS_* variables (or the
    instance/pod identity); region likewise (AWS_REGION / AWS_DEFAULT_REGION, else us-east-1)."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None  # e.g. http://minio:9000; None: AWS (or AWS_ENDPOINT_URL)
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    part_size: int = 8 << 20  # multipart part size; memory per upload is about part_size * max_concurrency
    max_concurrency: int = 4  # parts in flight per upload
    max_retries: int = 5  # per request, on connection errors, 5xx and timeouts
    retry_timeout_s: float = 60.0  # no retry starts later than this after a request's first try
    init_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 300.0  # one request (a part, a ranged GET) end to end


class S3Reader:
    """A stored object opened for ranged reads: each read is one ranged GET pinned to the object's ETag, so a
    file replaced while it is read ends the read with ArtifactCorrupt instead of mixing two versions."""

    def __init__(self, owner: S3ArtifactStore, key: str, size: int, e_tag: str | None) -> None:
        self._owner = owner
        self.key = key
        self.size = size
        self._e_tag = e_tag

    def _get(self, start: int, end: int):
        options = {"range": (start, end)}
        if self._e_tag:
            options["if_match"] = self._e_tag
        return obstore.get(self._owner.store, self.key, options=options)

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        end = min(self.size, offset + length)
        if offset >= end:
            return b""
        with self._owner.errors("read", self.key):
            return bytes(self._get(offset, end).bytes())

    def chunks(self, offset: int = 0, length: int | None = None, chunk_size: int = CHUNK) -> Iterator[bytes]:
        end = self.size if length is None else min(self.size, offset + length)
        if offset >= end:
            return
        with self._owner.errors("read", self.key):
            for piece in self._get(offset, end).stream(min_chunk_size=chunk_size):
                view = memoryview(piece)
                for i in range(0, len(view), chunk_size):  # the stream's pieces may be larger than asked
                    yield bytes(view[i:i + chunk_size])

    def close(self) -> None:
        pass

    def __enter__(self) -> S3Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class S3ArtifactStore:
    """Artifacts as objects under s3://bucket/prefix/."""

    def __init__(self, options: S3Options) -> None:
        self.options = options
        prefix = check_key(options.prefix, allow_empty=True)
        self.url = f"s3://{options.bucket}/{prefix}".rstrip("/")
        # The standard variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, web
        # identity) are read by obstore itself; the endpoint is resolved here too, so that plain http is allowed
        # for an http endpoint and error messages can name it.
        self.endpoint = options.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get(
            "AWS_ENDPOINT_URL") or None
        config = {k: v for k, v in {
            "endpoint": self.endpoint, "region": options.region,
            "access_key_id": options.access_key_id, "secret_access_key": options.secret_access_key,
            "session_token": options.session_token}.items() if v}
        client = {"connect_timeout": timedelta(seconds=options.connect_timeout_s),
                  "timeout": timedelta(seconds=options.request_timeout_s)}
        if (self.endpoint or "").startswith("http://"):
            client["allow_http"] = True
        retry = {"max_retries": options.max_retries,
                 "retry_timeout": timedelta(seconds=options.retry_timeout_s),
                 "backoff": {"init_backoff": timedelta(seconds=options.init_backoff_s),
                             "max_backoff": timedelta(seconds=options.max_backoff_s), "base": 2}}
        try:
            self.store = S3Store(options.bucket, prefix=prefix or None, client_options=client,
                                 retry_config=retry, **config)
        except BaseError as exc:
            raise ArtifactStoreMisconfigured(f"artifact store {self.url}: {_first_line(exc)}") from None

    def __repr__(self) -> str:
        return f"S3ArtifactStore({self.url!r}, endpoint={self.endpoint!r})"

    @contextlib.contextmanager
    def errors(self, action: str, key: str, *, writing: bool = False):
        """obstore's errors as artifacts.errors types, with a short message naming the store and the key.
        A write answered "not found" means the bucket is missing."""
        try:
            yield
        except (NotFoundError, FileNotFoundError) as exc:
            if exc.errno is not None:  # a local file (obstore's own "not found" carries no errno)
                raise
            if writing:
                raise ArtifactStoreMisconfigured(f"bucket {self.options.bucket!r} does not exist at "
                                                 f"{self.endpoint or 'AWS'} (writing {key})") from None
            raise ArtifactNotFound(f"nothing at {key} in {self.url}") from None
        except PreconditionError:
            raise ArtifactCorrupt(f"{key} in {self.url} was replaced while it was read") from None
        except (PermissionDeniedError, UnauthenticatedError) as exc:
            raise ArtifactStoreMisconfigured(f"{self.url} refused to {action} {key}: {_first_line(exc)}") from None
        except BaseError as exc:
            raise ArtifactStoreUnavailable(
                f"could not {action} {key} in {self.url} (endpoint {self.endpoint or 'AWS'}, after "
                f"up to {self.options.max_retries} retries): {_first_line(exc)}") from None

    # units

    def put_unit(self, folder: Path, key: str, *, progress: Progress | None = None) -> UnitManifest:
        key = check_key(key)
        folder = Path(folder)
        if not folder.is_dir():
            raise ArtifactNotFound(f"no folder {folder} to store as {key}")
        names = unit_files(folder)
        own = folder_marker(folder, key)
        if own is not None and sorted(own.files) != names:
            raise ArtifactCorrupt(f"the folder for {key} holds other files than its marker lists")
        marker_key = f"{key}/{MARKER}"
        before = self._list(key)
        if marker_key in before:  # the unit being replaced stops being complete before its files change
            with self.errors("unmark", marker_key, writing=True):
                obstore.delete(self.store, marker_key)
        entries = {}
        for name in names:
            entry = self._put_path(f"{key}/{name}", folder / name)
            if own is not None:
                check_entry(key, name, entry, own.files[name])
            entries[name] = entry
            if progress is not None:
                progress(name, entry.size)
        self._delete_stale(key, before, {f"{key}/{n}" for n in names})
        raw = own.marker if own is not None else build_marker(entries)
        with self.errors("mark complete", marker_key, writing=True):
            obstore.put(self.store, marker_key, raw, use_multipart=False)
        return parse_marker(key, raw)

    def _put_path(self, key: str, path: Path) -> FileEntry:
        with open(path, "rb") as f:
            return self._put_stream(key, f, None)

    def _put_stream(self, key: str, source: BinaryIO, progress: Progress | None) -> FileEntry:
        """One object from an open binary stream: a single request when it ends within one part, else a
        multipart upload fed part by part (at most max_concurrency parts in memory)."""
        hasher = Hasher()
        first = source.read(self.options.part_size)
        with self.errors("upload", key, writing=True):
            if len(first) < self.options.part_size:
                hasher.update(first)
                obstore.put(self.store, key, first, use_multipart=False)
                if progress is not None:
                    progress(key, len(first))
            else:
                chunks = reporting(_stream(first, source, hasher, self.options.part_size), key, progress)
                self._put_multipart(key, chunks)
        return hasher.entry()

    def _put_multipart(self, key: str, chunks: Iterator[bytes]) -> None:
        obstore.put(self.store, key, chunks, use_multipart=True, chunk_size=self.options.part_size,
                    max_concurrency=self.options.max_concurrency)

    def _delete_stale(self, key: str, before: dict[str, int], keep: set[str]) -> None:
        """Objects a replaced unit had that the new one has not (a nested unit's stay)."""
        nested = [k[: -len(MARKER) - 1] for k in before if k.endswith("/" + MARKER) and k != f"{key}/{MARKER}"]
        stale = [k for k in before if k not in keep and not k.endswith("/" + MARKER)
                 and not any(is_under(k, n) for n in nested)]
        self._delete(stale)

    def manifest(self, key: str) -> UnitManifest:
        key = check_key(key)
        try:
            with self.errors("read the marker of", key):
                raw = bytes(obstore.get(self.store, f"{key}/{MARKER}").bytes())
        except ArtifactNotFound:
            raise ArtifactNotFound(f"no complete unit at {key} in {self.url}") from None
        return parse_marker(key, raw)

    def get_unit(self, key: str, cache_root: Path) -> Path:
        manifest = self.manifest(key)
        cache_root = Path(cache_root)
        dest = cache_root / manifest.key
        if _cached(dest, manifest):
            return dest
        staged = staging_dir(cache_root)
        try:
            for name, expected in sorted(manifest.files.items()):
                file_key = f"{manifest.key}/{name}"
                with self.errors("download", file_key):
                    stream = obstore.get(self.store, file_key).stream(min_chunk_size=CHUNK)
                    got = write_stream(staged / name, stream)
                check_entry(manifest.key, name, got, expected)
            write_marker(staged, manifest.marker)
            try:
                swap_in(staged, dest, cache_root)
            except OSError:
                if not _cached(dest, manifest):  # another thread put the same unit there first: fine
                    raise
        except BaseException:
            remove_quietly(staged)
            raise
        return dest

    def list_units(self, prefix: str = "") -> list[str]:
        prefix = check_key(prefix, allow_empty=True)
        suffix = "/" + MARKER
        return sorted(k[: -len(suffix)] for k in self._list(prefix) if k.endswith(suffix))

    def _list(self, prefix: str) -> dict[str, int]:
        """{key: size} of every object under `prefix` (by whole segments; the whole store for "")."""
        found = {}
        with self.errors("list", prefix or "/"):
            for batch in obstore.list(self.store, prefix or None, chunk_size=1000):
                for meta in batch:
                    if not meta["path"].startswith(STAGING + "/"):
                        found[meta["path"]] = meta["size"]
        return found

    # files

    def put_file(self, key: str, source: Path | BinaryIO, *, progress: Progress | None = None) -> ObjectInfo:
        key = check_key(key)
        if isinstance(source, (str, Path)):
            with open(source, "rb") as f:
                entry = self._put_stream(key, f, progress)
            return ObjectInfo(key, entry.size, entry.sha256)
        entry = self._put_stream(key, source, progress)
        return ObjectInfo(key, entry.size, entry.sha256)

    def get_file(self, key: str, dest: Path, *, expected_sha256: str | None = None) -> ObjectInfo:
        key = check_key(key)
        with self.errors("download", key):
            stream = obstore.get(self.store, key).stream(min_chunk_size=CHUNK)
            return write_checked(stream, key, Path(dest), expected_sha256)

    def fetch_file(self, key: str, cache_root: Path) -> Path:
        info = self.stat(key)
        dest = Path(cache_root) / info.key
        if dest.is_file() and dest.stat().st_size == info.size:
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.get_file(key, dest)
        return dest

    def open_file(self, key: str) -> S3Reader:
        key = check_key(key)
        with self.errors("open", key):
            meta = obstore.head(self.store, key)
        return S3Reader(self, key, meta["size"], meta.get("e_tag"))

    def stat(self, key: str) -> ObjectInfo:
        key = check_key(key)
        with self.errors("stat", key):
            meta = obstore.head(self.store, key)
        return ObjectInfo(key, meta["size"])

    def exists(self, key: str) -> bool:
        key = check_key(key)
        for candidate in (key, f"{key}/{MARKER}"):
            try:
                with self.errors("stat", candidate):
                    obstore.head(self.store, candidate)
                return True
            except ArtifactNotFound:
                continue
        return False

    def delete_prefix(self, prefix: str) -> int:
        prefix = check_key(prefix)
        keys = list(self._list(prefix))
        with contextlib.suppress(ArtifactNotFound):  # an object at exactly `prefix` is not listed "under" it
            keys.append(self.stat(prefix).key)
        markers = [k for k in keys if k.rsplit("/", 1)[-1] == MARKER]
        self._delete(markers)  # first: no unit looks complete while its files go
        self._delete([k for k in keys if k not in set(markers)])
        return len(keys)

    def _delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), _DELETE_BATCH):
            with self.errors("delete", keys[i]):
                obstore.delete(self.store, keys[i:i + _DELETE_BATCH])

    def check(self) -> None:
        probe = f"{STAGING}/probe-{uuid.uuid4().hex}"
        with self.errors("write a probe to", probe, writing=True):
            obstore.put(self.store, probe, b"tunewire", use_multipart=False)
            ok = bytes(obstore.get(self.store, probe).bytes()) == b"tunewire"
            obstore.delete(self.store, probe)
        if not ok:
            raise ArtifactStoreMisconfigured(f"{self.url} did not read back what was written")


def _cached(dest: Path, manifest: UnitManifest) -> bool:
    """Whether `dest` already holds this very unit (the same marker, every file of its size)."""
    try:
        if (dest / MARKER).read_bytes() != manifest.marker:
            return False
        return all((dest / n).stat().st_size == e.size for n, e in manifest.files.items())
    except OSError:
        return False


def _stream(first: bytes, source: BinaryIO, hasher: Hasher, size: int) -> Iterator[bytes]:
    hasher.update(first)
    yield first
    while chunk := source.read(size):
        hasher.update(chunk)
        yield chunk


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:400]
