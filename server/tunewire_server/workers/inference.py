"""The control plane's side of the long-lived inference worker.

The worker starts on the first Predict and stays up, keeping recently used models loaded. Requests
carry an id; answers come back in any order and resolve the matching future (unary) or feed the
matching queue (streams: {id, delta} messages, then {id, ok, final}). A caller that goes away sends
{op: "cancel", id}, which stops that generation at its next token. If the worker dies, pending
requests fail and the next request starts a new one.

Limits, checked here before anything is sent: each input at most max_predict_input_chars characters (a
conversation counts its messages together), and at most max_pending_predicts calls in the worker at once
(more are refused with RESOURCE_EXHAUSTED rather than queued without bound). The worker checks the
token limit (max_predict_input_tokens), which needs the model's tokenizer.

Flow control of streams: a stream's generation runs at most STREAM_WINDOW deltas ahead of what its
consumer (the gRPC stream) has taken; the consumer's progress goes back to the worker as credit. The
gRPC server's `yield` itself blocks only once the client's HTTP/2 window is full (measured with grpc 1.85:
about 4 MB with the default BDP-grown windows, about 1 KB with a 1 KB window), so for small text deltas
the client's own buffers absorb most of a generation; a client that stops reading for longer than
predict_stream_idle_s has its generation stopped (in the worker) and gets RESOURCE_EXHAUSTED when it
reads on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import structlog

from tunewire_server.artifacts import ArtifactError, ArtifactNotFound
from tunewire_server.checkpoints import MARKER
from tunewire_server.config import Settings
from tunewire_server.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidSpec,
    ResourceExhausted,
    TunewireError,
    Unavailable,
)
from tunewire_server.shared_store import fetch_unit, model_key, open_shared
from tunewire_server.validation.generation import GenerationParams, GenerationRequestError
from tunewire_server.workers.process import WorkerProcess

log = structlog.get_logger("tunewire.inference")

STREAM_WINDOW = 16  # deltas a stream's generation may run ahead of its consumer
MAX_ERROR_CHARS = 500


class InferenceClient:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._worker: WorkerProcess | None = None
        self._reader_task: asyncio.Task | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._streams: dict[int, asyncio.Queue] = {}
        self._in_worker: set[int] = set()  # calls sent to the worker and not answered yet
        self._ids = itertools.count(1)
        self._start_lock = asyncio.Lock()
        self._fetch_locks: dict[str, asyncio.Lock] = {}  # job id -> the lock of its model's fetch

    async def _ensure_worker(self) -> WorkerProcess:
        async with self._start_lock:
            if self._worker is None or self._worker.proc.returncode is not None:
                s = self._settings
                env = {"TUNEWIRE_CACHE_SIZE": str(s.inference_cache_size),
                       "TUNEWIRE_BATCH_WINDOW_MS": str(s.predict_batch_window_ms),
                       "TUNEWIRE_MAX_BATCH": str(s.predict_max_batch),
                       "TUNEWIRE_MAX_INPUT_TOKENS": str(s.max_predict_input_tokens),
                       "TUNEWIRE_STREAM_IDLE_S": str(s.predict_stream_idle_s)}
                if s.torch_threads:
                    env["TUNEWIRE_TORCH_THREADS"] = str(s.torch_threads)
                self._worker = await WorkerProcess.start(
                    "tunewire_server.worker.inference.main", s.data_dir / "inference.log", s.worker_cwd, env)
                self._reader_task = asyncio.create_task(self._read(self._worker))
                log.info("inference worker started", pid=self._worker.pid)
            return self._worker

    async def _read(self, worker: WorkerProcess) -> None:
        async for message in worker.messages():
            request_id = message.get("id")
            if "ok" in message:
                self._in_worker.discard(request_id)
            stream = self._streams.get(request_id)
            if stream is not None:
                stream.put_nowait(message)  # bounded: the worker sends at most the stream's credit
                continue
            future = self._pending.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(message)
        code = await worker.wait()
        log.warning("inference worker exited", code=code)
        self._in_worker.clear()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(Unavailable("the inference worker stopped; try again"))
        self._pending.clear()
        for stream in self._streams.values():
            stream.put_nowait({"ok": False, "error": {"kind": "unavailable",
                                                      "message": "the inference worker stopped; try again"}})

    def _write(self, worker: WorkerProcess, message: dict) -> None:
        """A control message to the worker; synchronous, so it also works from a cancelled task."""
        stdin = worker.proc.stdin
        if worker.proc.returncode is None and stdin is not None and not stdin.is_closing():
            with contextlib.suppress(ConnectionError, RuntimeError):
                stdin.write(json.dumps(message).encode() + b"\n")

    def _cancel(self, worker: WorkerProcess, request_id: int) -> None:
        self._write(worker, {"op": "cancel", "id": request_id})

    def _admit(self) -> int:
        """An id for a new call, or RESOURCE_EXHAUSTED when the worker already has enough to do."""
        limit = self._settings.max_pending_predicts
        if len(self._in_worker) >= limit:
            raise ResourceExhausted(f"the inference worker has {limit} calls in progress (max_pending_predicts); "
                                    "try again later")
        request_id = next(self._ids)
        self._in_worker.add(request_id)
        return request_id

    async def predict(self, model_dir: str, request: dict) -> list[dict]:
        _check_generation(request)
        _check_sizes(request, self._settings.max_predict_input_chars)
        worker = await self._ensure_worker()
        request_id = self._admit()
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await worker.send({"id": request_id, "op": "predict", "model_dir": model_dir, **request})
            answer = await future
        except asyncio.CancelledError:
            self._cancel(worker, request_id)  # the caller went away: stop generating for it
            raise
        finally:
            self._pending.pop(request_id, None)
            self._in_worker.discard(request_id)
        if answer.get("ok"):
            return answer["predictions"]
        raise _error_from(answer.get("error", {}))

    async def predict_stream(self, model_dir: str, request: dict) -> AsyncIterator[dict]:
        """Yield {"text_delta": str} as text is generated, then {"final": {text, num_tokens, finish_reason}}.

        A consumer that stops early (closes the iterator or is cancelled) stops the generation; one that
        does not come back for the next delta holds it after STREAM_WINDOW deltas."""
        _check_generation(request)
        _check_sizes(request, self._settings.max_predict_input_chars)
        worker = await self._ensure_worker()
        request_id = self._admit()
        queue: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = queue
        finished = False
        taken = 0  # deltas the consumer took since the last credit
        try:
            await worker.send({"id": request_id, "op": "generate_stream", "model_dir": model_dir, **request,
                               "credit": STREAM_WINDOW})
            while True:
                message = await queue.get()
                if "delta" in message:
                    yield {"text_delta": message["delta"]}
                    taken += 1
                    if taken >= STREAM_WINDOW // 2:  # the consumer came back: it may have more
                        self._write(worker, {"op": "credit", "id": request_id, "n": taken})
                        taken = 0
                    continue
                finished = True
                if not message.get("ok"):
                    raise _error_from(message.get("error", {}))
                yield {"final": message["final"]}
                return
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                self._cancel(worker, request_id)
            self._in_worker.discard(request_id)

    async def stats(self) -> dict:
        """The worker's view: {calls: [{id, op, tokens, held, cancelled}], rss_bytes} (for operators and tests)."""
        worker = await self._ensure_worker()
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await worker.send({"id": request_id, "op": "stats"})
            answer = await future
        finally:
            self._pending.pop(request_id, None)
        return answer["stats"]

    async def evict(self, model_dir: str) -> int:
        """Drop every model cached from `model_dir` or a folder under it (a deleted job's folder): how many
        were dropped. Starts no worker: with none running, nothing is cached."""
        worker = self._worker
        if worker is None or worker.proc.returncode is not None or not model_dir:
            return 0
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await worker.send({"id": request_id, "op": "evict", "model_dir": model_dir})
            answer = await future
        except (Unavailable, ConnectionError):
            return 0  # the worker stopped: its cache went with it
        finally:
            self._pending.pop(request_id, None)
        return int(answer.get("evicted") or 0)

    async def fetch_model(self, job_id: str, model_dir: Path) -> bool:
        """Make `model_dir` (a SUCCEEDED job's model folder) local: with a shared artifact store and no
        complete local copy, fetch the unit jobs/<id>/model into it (each file checked against its marker;
        the folder appears whole, by one rename). One fetch per job at a time; later callers reuse it.
        Whether the model is there now. No shared store: whether the folder is there, as before.
        The store unreachable: UNAVAILABLE."""
        model_dir = Path(model_dir)
        store = open_shared(self._settings)
        if store is None or (model_dir / MARKER).is_file():
            return model_dir.is_dir()
        lock = self._fetch_locks.setdefault(job_id, asyncio.Lock())
        try:
            async with lock:
                if (model_dir / MARKER).is_file():
                    return True
                await asyncio.to_thread(fetch_unit, store, model_key(job_id), model_dir)
                log.info("model fetched from the artifact store", job_id=job_id)
                return True
        except ArtifactNotFound:
            return model_dir.is_dir()
        except ArtifactError as exc:
            raise Unavailable(f"job {job_id}'s model is not on this replica and the shared artifact store cannot "
                              f"be read now ({type(exc).__name__})") from None
        finally:
            if not lock.locked():
                self._fetch_locks.pop(job_id, None)

    @property
    def pid(self) -> int | None:
        return self._worker.pid if self._worker is not None and self._worker.proc.returncode is None else None

    async def close(self) -> None:
        if self._worker is not None:
            await self._worker.close(grace_s=5)
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task


def _check_generation(request: dict) -> None:
    """Bad generation settings are the caller's to fix: INVALID_ARGUMENT before the worker sees them."""
    if "generation" not in request:
        return
    try:
        GenerationParams.from_request(request["generation"])
    except GenerationRequestError as exc:
        raise InvalidSpec(FieldViolation(exc.field or "generation", exc.message)) from None


def _check_sizes(request: dict, limit: int) -> None:
    """Each input (a text, or one conversation's messages together) at most `limit` characters."""
    sized = [(f"inputs[{i}]", _chars(text)) for i, text in enumerate(request.get("inputs") or [])]
    sized += [(f"conversations[{i}].messages", _conversation_chars(c))
              for i, c in enumerate(request.get("conversations") or [])]
    if "text" in request:
        sized.append(("text", _chars(request["text"])))
    if "conversation" in request:
        sized.append(("conversation.messages", _conversation_chars(request["conversation"])))
    for field, n in sized:
        if n > limit:
            raise InvalidSpec(FieldViolation(field, f"is {n} characters long; at most {limit} characters per "
                                                    "input (max_predict_input_chars)"))


def _chars(value) -> int:
    return len(value) if isinstance(value, str) else 0


def _conversation_chars(conversation) -> int:
    messages = conversation.get("messages") if isinstance(conversation, dict) else None
    return sum(_chars(m.get("role")) + _chars(m.get("content")) for m in messages or [] if isinstance(m, dict))


def _error_from(error: dict) -> TunewireError:
    kind = error.get("kind")
    message = str(error.get("message") or "prediction failed")[:MAX_ERROR_CHARS]
    if kind == "invalid":
        return InvalidSpec(FieldViolation(str(error.get("field") or "inputs")[:200], message))
    if kind == "precondition":
        return FailedPrecondition(message)
    if kind == "unavailable":
        return Unavailable(message)
    if kind == "idle":
        return ResourceExhausted(message)
    return TunewireError(message)
