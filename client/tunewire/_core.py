"""What the sync and asyncio clients share, written once: the meaning of every call and the decisions of
every loop. Nothing here waits, sends or receives (a grpc channel connects on its first call).

`Client` and `AsyncClient` are thin shells around this module: they open a channel, send what it builds
(blocking or awaited), sleep where it says, and hand back what it converts. A unary call is a `Unary`
(stub method, request, conversion of the response); `StreamResumer` follows a StreamMetrics stream
across reconnects; `Pager` walks ListJobs pages (`DatasetPager` ListDatasets pages); `Waiter` decides
when `wait()` is done and what it returns; `Upload` reads a file for UploadDataset and decides where a
resumed upload goes on; `Download` writes a DownloadModel stream into a folder, checks every sha256 and
decides where a resumed download goes on.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message as ProtoMessage

from tunewire import _requests as req
from tunewire.errors import IntegrityError, JobFailedError
from tunewire.types import (
    Checkpoints,
    DownloadedModel,
    Estimate,
    Job,
    JobEvent,
    JobState,
    ModelFile,
    Prediction,
    StateChange,
    UploadedDataset,
    prediction_from_proto,
)
from tunewire.v1 import dataset_pb2, job_pb2, model_pb2
from tunewire.v1 import tuning_service_pb2 as pb
from tunewire.v1 import tuning_service_pb2_grpc as pb_grpc

T = TypeVar("T")


class Connection:
    """The state both clients hold: a channel (`grpc` or `grpc.aio`, chosen by the subclass's `_grpc`),
    the stub, the default deadline and the call metadata."""

    _grpc: Any  # the grpc or grpc.aio module

    def __init__(self, address: str = "localhost:50051", *, timeout: float = req.DEFAULT_TIMEOUT,
                 token: str | None = None, credentials: grpc.ChannelCredentials | None = None,
                 max_message_bytes: int = 64 * 1024 * 1024,
                 keepalive_s: float = req.DEFAULT_KEEPALIVE_S) -> None:
        options = req.channel_options(max_message_bytes, keepalive_s)
        self._channel = (self._grpc.secure_channel(address, credentials, options) if credentials
                         else self._grpc.insecure_channel(address, options))
        self._stub = pb_grpc.TuningServiceStub(self._channel)
        self._timeout = timeout
        self._metadata = req.metadata(token)
        self.address = address

    def _call_options(self, timeout: float | None) -> dict[str, Any]:
        """Keyword arguments of a unary call: every one has a deadline."""
        return {"timeout": timeout or self._timeout, "metadata": self._metadata}


# --- unary calls ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unary(Generic[T]):
    """One unary call: which stub method, the request, and how its response becomes the SDK's result."""

    method: str
    request: ProtoMessage
    convert: Callable[[Any], T]


def _page(response: pb.ListJobsResponse) -> pb.ListJobsResponse:
    return response


def _job(response: Any) -> Job:
    return Job.from_proto(response.job)


def submit(spec: req.SpecLike, request_id: str) -> Unary[Job]:
    return Unary("SubmitJob", pb.SubmitJobRequest(spec=req.as_spec(spec), request_id=request_id), _job)


def estimate(spec: req.SpecLike) -> Unary[Estimate]:
    return Unary("EstimateJob", pb.EstimateJobRequest(spec=req.as_spec(spec)),
                 lambda response: Estimate.from_proto(response.estimate))


def get(job_id: str) -> Unary[Job]:
    return Unary("GetJob", pb.GetJobRequest(job_id=job_id), _job)


def cancel(job_id: str) -> Unary[Job]:
    return Unary("CancelJob", pb.CancelJobRequest(job_id=job_id), _job)


def pause(job_id: str) -> Unary[Job]:
    return Unary("PauseJob", pb.PauseJobRequest(job_id=job_id), _job)


def resume(job_id: str) -> Unary[Job]:
    return Unary("ResumeJob", pb.ResumeJobRequest(job_id=job_id), _job)


def predict(job_id: str, inputs: Sequence[str | Sequence[req.Message]] | str,
            generation: pb.GenerationParams | None, generation_kwargs: dict[str, Any]) -> Unary[list[Prediction]]:
    if generation is None and generation_kwargs:
        generation = req.generation_params(**generation_kwargs)
    return Unary("Predict", req.predict_request(job_id, inputs, generation),
                 lambda response: [prediction_from_proto(p) for p in response.predictions])


def predict_stream_request(job_id: str, prompt: str | Sequence[req.Message],
                           generation_kwargs: dict[str, Any]) -> pb.PredictStreamRequest:
    request = pb.PredictStreamRequest(job_id=job_id, generation=req.generation_params(**generation_kwargs))
    if isinstance(prompt, str):
        request.text = prompt
    else:
        request.conversation.CopyFrom(req.conversation(prompt))
    return request


def text_delta(response: pb.PredictStreamResponse) -> str:
    """The text one PredictStream response adds ('' for a response that carries none)."""
    return response.text_delta


HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"


def is_serving(answer: bytes) -> bool:
    return answer == req.HEALTH_SERVING


# --- the loops' decisions ------------------------------------------------------------------------------


class StreamResumer:
    """Follows one job's StreamMetrics across broken connections.

    It remembers the seq of the last event it delivered, so the next request asks for what comes after
    it and no event is lost or repeated. When a stream breaks, `retry_delay` says how long to wait before
    reconnecting, or None to give up (the shell then raises the error): only UNAVAILABLE is retried, at
    most len(delays) times in a row; each delivered event resets the count.
    """

    def __init__(self, job_id: str, after_seq: int = 0, reconnect: bool = True,
                 delays: Sequence[float] = req.RECONNECT_DELAYS) -> None:
        self.job_id = job_id
        self.last_seq = after_seq
        self.reconnect = reconnect
        self.delays = tuple(delays)
        self.failures = 0

    def request(self) -> pb.StreamMetricsRequest:
        """The request that opens (or reopens) the stream after the last delivered seq."""
        return req.stream_request(self.job_id, self.last_seq)

    def events(self, response: pb.StreamMetricsResponse) -> Iterator[JobEvent]:
        """The events of one response; each counts as delivered when it is handed out."""
        for message in req.response_events(response):
            event = JobEvent.from_proto(message)
            self.last_seq = event.seq
            self.failures = 0
            yield event

    def retry_delay(self, code: grpc.StatusCode | None) -> float | None:
        """Seconds to wait before reconnecting after the stream failed with `code`, or None: give up."""
        if not self.reconnect or code not in req.RETRYABLE or self.failures >= len(self.delays):
            return None
        delay = self.delays[self.failures]
        self.failures += 1
        return delay


class Pager:
    """Walks ListJobs pages: `next_call()` is the call for the next page (None when the listing is over:
    the last page had no next_page_token, or `limit` jobs were delivered), `take(page)` the jobs of a page
    to hand out."""

    def __init__(self, states: Iterable[JobState | str] | None, page_size: int, limit: int | None) -> None:
        self.states = list(states or ())
        self.page_size = page_size
        self.limit = limit
        self.token = ""
        self.seen = 0
        self.done = False

    def next_call(self) -> Unary[pb.ListJobsResponse] | None:
        if self.done or (self.limit is not None and self.seen >= self.limit):
            return None
        return Unary("ListJobs", req.list_request(self.states, self.page_size, self.token), _page)

    def take(self, page: pb.ListJobsResponse) -> list[Job]:
        room = len(page.jobs) if self.limit is None else max(0, self.limit - self.seen)
        jobs = [Job.from_proto(job) for job in page.jobs[:room]]
        self.seen += len(jobs)
        self.token = page.next_page_token
        self.done = not self.token
        return jobs


class Waiter:
    """`wait()`'s decisions: it follows the job's events until one says the job reached a terminal state
    (or PAUSED, with `return_when_paused`; or the stream ends), then reads the job once and returns it,
    raising JobFailedError unless it SUCCEEDED (or is PAUSED, with `return_when_paused`) when
    `raise_on_failure`.

    PAUSED is not terminal: a paused job's stream stays open (its PAUSED state change is an event like any
    other) and, by default, wait() goes on waiting until someone resumes the job and it ends."""

    def __init__(self, raise_on_failure: bool = True, return_when_paused: bool = False) -> None:
        self.raise_on_failure = raise_on_failure
        self.return_when_paused = return_when_paused

    def finished(self, event: JobEvent) -> bool:
        if not isinstance(event.data, StateChange):
            return False
        return event.data.state.terminal or (self.return_when_paused and event.data.state == JobState.PAUSED)

    def result(self, job: Job) -> Job:
        paused = self.return_when_paused and job.state == JobState.PAUSED
        if self.raise_on_failure and job.state != JobState.SUCCEEDED and not paused:
            raise JobFailedError(job)
        return job


# --- datasets --------------------------------------------------------------------------------------------

UPLOAD_CHUNK = 1024 * 1024  # bytes per UploadDataset chunk (the server takes up to 4 MiB by default)
UPLOAD_RETRIES = 8  # reconnects in a row without progress before upload_dataset gives up
Progress = Callable[[int, int], None]  # (bytes the server holds or was sent, total bytes)


def _dataset(response: Any) -> UploadedDataset:
    return UploadedDataset.from_proto(response.dataset)


def get_dataset(dataset_id: str, label_column: str = "") -> Unary[UploadedDataset]:
    return Unary("GetDataset", pb.GetDatasetRequest(dataset_id=dataset_id, label_column=label_column), _dataset)


def delete_dataset(dataset_id: str) -> Unary[bool]:
    return Unary("DeleteDataset", pb.DeleteDatasetRequest(dataset_id=dataset_id), lambda r: r.deleted)


def file_format(value: str | int | None) -> int:
    """A FileFormat value from "jsonl"/"CSV"/"FILE_FORMAT_TSV" or the enum's number; None = unspecified."""
    if value is None or value == "":
        return job_pb2.FILE_FORMAT_UNSPECIFIED
    if isinstance(value, int):
        return value
    name = value.upper().lstrip(".")
    return job_pb2.FileFormat.Value(name if name.startswith("FILE_FORMAT_") else "FILE_FORMAT_" + name)


def sha256_of(path: Path, block: int = UPLOAD_CHUNK) -> str:
    """The file's sha256, read in blocks (never whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(block):
            digest.update(data)
    return digest.hexdigest()


class Upload:
    """One file's upload: the header (sha256 computed streaming), the StartUpload call that says where to
    go on, the UploadDataset messages from an offset, and when a broken stream is worth another try.

    A call that fails UNAVAILABLE (a dropped connection, a server restarting) is tried again after a
    delay; each try first asks the server the offset it holds, so only the rest is sent. Tries in a row
    that find the server holding no more than before count toward `retries`; progress resets the count."""

    RETRYABLE = req.RETRYABLE

    def __init__(self, path: str | os.PathLike, name: str | None = None, format: str | int | None = None,
                 progress: Progress | None = None, *, upload_id: str | None = None, label_column: str = "",
                 chunk_size: int = UPLOAD_CHUNK, delays: Sequence[float] = req.RECONNECT_DELAYS,
                 retries: int = UPLOAD_RETRIES) -> None:
        self.path = Path(path)
        self.size = self.path.stat().st_size
        self.header = dataset_pb2.UploadHeader(
            upload_id=upload_id or uuid.uuid4().hex, name=name or self.path.name, format=file_format(format),
            size_bytes=self.size, sha256=sha256_of(self.path), label_column=label_column)
        self.progress = progress
        self.chunk_size = chunk_size
        self.delays = tuple(delays)
        self.retries = retries
        self.failures = 0
        self.held = 0  # what the server held at the last StartUpload
        self.sent = 0  # bytes sent in chunks, over every try
        self.callback_error: BaseException | None = None  # what `progress` raised inside the request stream

    def start(self) -> Unary[tuple[int, UploadedDataset | None]]:
        def convert(response: pb.StartUploadResponse) -> tuple[int, UploadedDataset | None]:
            dataset = UploadedDataset.from_proto(response.dataset) if response.HasField("dataset") else None
            if response.offset > self.held:
                self.failures = 0
            self.held = response.offset
            self._report(self.size if dataset is not None else response.offset)
            return response.offset, dataset

        return Unary("StartUpload", pb.StartUploadRequest(header=self.header), convert)

    def requests(self, offset: int) -> Iterator[pb.UploadDatasetRequest]:
        """The header, then the file from `offset` in chunks."""
        yield pb.UploadDatasetRequest(header=self.header)
        with open(self.path, "rb") as f:
            f.seek(offset)
            while data := f.read(self.chunk_size):
                yield pb.UploadDatasetRequest(chunk=dataset_pb2.UploadChunk(offset=offset, data=data))
                offset += len(data)
                self.sent += len(data)
                try:
                    self._report(offset)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller by raise_callback_error
                    # Raised here it would reach gRPC's request loop, which logs it and cancels the call
                    # ("Exception iterating requests!"): the stream ends instead, and the shell raises it.
                    self.callback_error = exc
                    return

    def _report(self, done: int) -> None:
        if self.progress is not None:
            self.progress(done, self.size)

    def raise_callback_error(self) -> None:
        """Raise what the progress callback raised while the stream was sent, if it did (the shells call this
        whenever an UploadDataset call ends; the bytes the server holds stay there for a resume)."""
        error, self.callback_error = self.callback_error, None
        if error is not None:
            raise error from None  # not as a consequence of the call it ended

    def retry_delay(self, code: grpc.StatusCode | None) -> float | None:
        """Seconds to wait before the next try after a stream failed with `code`, or None: give up."""
        if code not in self.RETRYABLE or self.failures >= self.retries:
            return None
        delay = self.delays[min(self.failures, len(self.delays) - 1)] if self.delays else 0.0
        self.failures += 1
        return delay


class DatasetPager:
    """Walks ListDatasets pages, like Pager."""

    def __init__(self, page_size: int, limit: int | None) -> None:
        self.page_size, self.limit = page_size, limit
        self.token, self.seen, self.done = "", 0, False

    def next_call(self) -> Unary[pb.ListDatasetsResponse] | None:
        if self.done or (self.limit is not None and self.seen >= self.limit):
            return None
        return Unary("ListDatasets", pb.ListDatasetsRequest(page_size=self.page_size, page_token=self.token),
                     lambda r: r)

    def take(self, page: pb.ListDatasetsResponse) -> list[UploadedDataset]:
        room = len(page.datasets) if self.limit is None else max(0, self.limit - self.seen)
        out = [UploadedDataset.from_proto(d) for d in page.datasets[:room]]
        self.seen += len(out)
        self.token = page.next_page_token
        self.done = not self.token
        return out


# --- models out ------------------------------------------------------------------------------------------

DOWNLOAD_RETRIES = 8  # reconnects in a row without progress before download gives up
PART_SUFFIX = ".tunewire-part"


def list_checkpoints(job_id: str) -> Unary[Checkpoints]:
    return Unary("ListCheckpoints", pb.ListCheckpointsRequest(job_id=job_id),
                 lambda response: Checkpoints.from_proto(job_id, response))


def delete_job(job_id: str) -> Unary[bool]:
    return Unary("DeleteJob", pb.DeleteJobRequest(job_id=job_id), lambda response: response.deleted)


def _safe_name(path: str) -> bool:
    """A file name a download may write: one path component, inside the destination folder."""
    return bool(path) and path not in (".", "..") and not any(c in path for c in "/\\\0")


class Download:
    """One DownloadModel into a folder: writes each file to a hidden partial file beside its final name,
    hashes what it writes, and renames a file into place only once it is whole and its sha256 matches the
    manifest's. A dropped connection (UNAVAILABLE) or a stream that ends early is resumed with the offsets of
    the bytes held; partial files left by an earlier call (their names carry the file's sha256, so a partial
    of other content is never continued) are continued too, and files already in place with the right
    sha256 are not fetched again.

    The shells call `request()`, hand each response to `take()` (False: reopen the call, now with the
    offsets learnt from the manifest), `interrupted()` when a call ends without the download being
    `complete`, `retry_delay(code)` for whether and when to try again, and `result()` at the end."""

    RETRYABLE = req.RETRYABLE

    def __init__(self, job_id: str, dest: str | os.PathLike, checkpoint: int | None = None, merged: bool = False,
                 progress: Progress | None = None, *, chunk_size: int = 0,
                 delays: Sequence[float] = req.RECONNECT_DELAYS, retries: int = DOWNLOAD_RETRIES) -> None:
        self.job_id = job_id
        self.dest = Path(dest)
        self.checkpoint = checkpoint
        self.merged = merged
        self.progress = progress
        self.chunk_size = chunk_size
        self.delays = tuple(delays)
        self.retries = retries
        self.failures = 0
        self.reconnects = 0
        self.manifest: model_pb2.DownloadManifest | None = None
        self.held: dict[str, int] = {}  # bytes of each file at the client (== size once whole)
        self.whole: set[str] = set()  # files in place under their final name, sha256 checked
        self.received = 0
        self._asked: dict[str, int] = {}  # the offsets the open call asked for
        self._file: tuple[str, Any, Any] | None = None  # (path, open partial file, its running sha256)
        self._received_at_failure = 0
        # Writing and hashing run on one thread beside the one that receives (each chunk's write overlaps
        # the next chunk's arrival): one write in flight, so at most two chunks are held.
        self._writer: ThreadPoolExecutor | None = None
        self._writing: Future | None = None

    # --- requests and responses ---

    def request(self) -> pb.DownloadModelRequest:
        """The request for the next call: from the bytes held (nothing held: from the start)."""
        self._asked = {path: n for path, n in self.held.items() if n}
        request = pb.DownloadModelRequest(job_id=self.job_id, offsets=self._asked, chunk_size=self.chunk_size,
                                          form=model_pb2.MODEL_FORM_MERGED if self.merged
                                          else model_pb2.MODEL_FORM_AS_TRAINED)
        if self.checkpoint is not None:
            request.checkpoint_step = self.checkpoint
        return request

    def take(self, response: pb.DownloadModelResponse) -> bool:
        """Write what one response carries. False: the call must be reopened (the manifest showed bytes held
        here that the call did not ask to skip)."""
        part = response.WhichOneof("part")
        if part == "manifest":
            return self._manifest(response.manifest)
        if part != "chunk" or self.manifest is None:
            raise IntegrityError(f"the server sent a {part or 'empty'} message where the download expected "
                                 f"{'a chunk' if self.manifest is not None else 'the manifest'}")
        self._chunk(response.chunk)
        return True

    def _manifest(self, manifest: model_pb2.DownloadManifest) -> bool:
        if self.manifest is not None:
            if list(manifest.files) != list(self.manifest.files):
                raise IntegrityError(f"the model of job {self.job_id} changed on the server during the download")
            return True
        names = [f.path for f in manifest.files]
        if not all(_safe_name(n) for n in names) or len(set(names)) != len(names):
            raise IntegrityError("the server's manifest names a file outside the download folder (or twice)")
        self.manifest = manifest
        self.dest.mkdir(parents=True, exist_ok=True)
        for f in manifest.files:
            final, part = self.dest / f.path, self._part(f)
            if final.is_file() and final.stat().st_size == f.size_bytes and sha256_of(final) == f.sha256:
                self.held[f.path] = f.size_bytes
                self.whole.add(f.path)
            elif part.is_file() and part.stat().st_size <= f.size_bytes:
                self.held[f.path] = part.stat().st_size
            else:
                part.unlink(missing_ok=True)
                self.held[f.path] = 0
        self._report()
        return not any(self.held.values())  # bytes held that this call did not ask to skip: ask again

    def _part(self, f: model_pb2.ModelFile) -> Path:
        return self.dest / f".{f.path}.{f.sha256[:16]}{PART_SUFFIX}"

    def _entry(self, path: str) -> model_pb2.ModelFile:
        assert self.manifest is not None
        for f in self.manifest.files:
            if f.path == path:
                return f
        raise IntegrityError(f"the server sent a chunk of {path[:64]!r}, which its manifest does not name")

    def _chunk(self, chunk: model_pb2.ModelChunk) -> None:
        f = self._entry(chunk.path)
        if f.path in self.whole:
            return  # held whole already: the server sends one empty last chunk for it
        if chunk.offset != self.held[f.path] or chunk.offset + len(chunk.data) > f.size_bytes:
            raise IntegrityError(f"the server sent bytes {chunk.offset}..{chunk.offset + len(chunk.data)} of "
                                 f"{f.path}, expected them from {self.held[f.path]} (size {f.size_bytes})")
        self._settle()  # the previous chunk is written (its error, if any, raised here)
        if self._file is None or self._file[0] != f.path:
            self._close()
            self._file = (f.path, *self._open(f))
        _, handle, digest = self._file
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="tunewire-download")
        self.held[f.path] += len(chunk.data)
        self.received += len(chunk.data)
        if self.received > self._received_at_failure:
            self.failures = 0
        self._writing = self._writer.submit(self._write, f, handle, digest, chunk.data, chunk.last)
        if chunk.last:  # a file is whole (or refused) when take() returns: its last write is waited for
            self._file = None  # that write closes it
            self._settle()
        self._report()

    def _write(self, f: model_pb2.ModelFile, handle: Any, digest: Any, data: bytes, last: bool) -> None:
        handle.write(data)
        digest.update(data)
        if last:
            self._finish(f, handle, digest)

    def _settle(self) -> None:
        """Wait for the write in flight; raise its error (IntegrityError, OSError)."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def _open(self, f: model_pb2.ModelFile) -> tuple[Any, Any]:
        """The partial file, open for appending at the bytes held, and the sha256 of those bytes."""
        part = self._part(f)
        digest = hashlib.sha256()
        if self.held[f.path]:
            with open(part, "rb") as existing:
                while data := existing.read(UPLOAD_CHUNK):
                    digest.update(data)
        handle = open(part, "ab" if self.held[f.path] else "wb")  # noqa: SIM115 (closed by _close)
        return handle, digest

    def _finish(self, f: model_pb2.ModelFile, handle: Any, digest: Any) -> None:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        part = self._part(f)
        if self.held[f.path] != f.size_bytes or digest.hexdigest() != f.sha256:
            part.unlink(missing_ok=True)
            self.held[f.path] = 0
            raise IntegrityError(f"{f.path} of job {self.job_id} does not match the sha256 the server announced "
                                 f"({digest.hexdigest()[:16]}... != {f.sha256[:16]}...); the partial file is removed")
        os.replace(part, self.dest / f.path)
        self.whole.add(f.path)

    def _close(self) -> None:
        if self._file is not None:
            self._file[1].close()
            self._file = None

    def _report(self) -> None:
        if self.progress is not None and self.manifest is not None:
            self.progress(sum(self.held.values()), self.manifest.total_bytes)

    # --- the loop's decisions ---

    @property
    def complete(self) -> bool:
        return self.manifest is not None and len(self.whole) == len(self.manifest.files)

    def interrupted(self) -> None:
        """A call ended (broken, reopened, failed or done): wait for the write in flight, close the open file
        (its bytes stay held). Raises the write's error, if it failed."""
        try:
            self._settle()
        finally:
            self._close()
            if self._writer is not None:
                self._writer.shutdown()
                self._writer = None

    def retry_delay(self, code: grpc.StatusCode | None) -> float | None:
        """Seconds to wait before resuming after a call failed with `code` (None for a stream that ended
        early), or None: give up. Tries in a row that bring no new byte count toward `retries`."""
        if code is not None and code not in self.RETRYABLE or self.failures >= self.retries:
            return None
        delay = self.delays[min(self.failures, len(self.delays) - 1)] if self.delays else 0.0
        self.failures += 1
        self.reconnects += 1
        self._received_at_failure = self.received
        return delay

    def result(self) -> DownloadedModel:
        assert self.manifest is not None
        m = self.manifest
        return DownloadedModel(
            path=self.dest, job_id=self.job_id, checkpoint=m.checkpoint_step if m.HasField("checkpoint_step") else None,
            merged=m.form == model_pb2.MODEL_FORM_MERGED, step=m.step if m.HasField("step") else None,
            files=[ModelFile(f.path, f.size_bytes, f.sha256) for f in m.files], total_bytes=m.total_bytes,
            received_bytes=self.received, reconnects=self.reconnects)
