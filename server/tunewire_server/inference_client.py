"""The control plane's side of the long-lived inference worker.

The worker starts on the first Predict and stays up, keeping recently used models loaded. Requests
carry an id; answers come back in any order and resolve the matching future (unary) or feed the
matching queue (streams: {id, delta} messages, then {id, ok, final}). A caller that goes away sends
{op: "cancel", id}, which stops that generation at its next token. If the worker dies, pending
requests fail and the next request starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator

import structlog

from tunewire_server.config import Settings
from tunewire_server.errors import FailedPrecondition, FieldViolation, InvalidSpec, TunewireError, Unavailable
from tunewire_server.validation_sft import GenerationParams, GenerationRequestError
from tunewire_server.workers import WorkerProcess

log = structlog.get_logger("tunewire.inference")


class InferenceClient:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._worker: WorkerProcess | None = None
        self._reader_task: asyncio.Task | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._streams: dict[int, asyncio.Queue] = {}
        self._ids = itertools.count(1)
        self._start_lock = asyncio.Lock()

    async def _ensure_worker(self) -> WorkerProcess:
        async with self._start_lock:
            if self._worker is None or self._worker.proc.returncode is not None:
                env = {"TUNEWIRE_CACHE_SIZE": str(self._settings.inference_cache_size),
                       "TUNEWIRE_BATCH_WINDOW_MS": str(self._settings.predict_batch_window_ms),
                       "TUNEWIRE_MAX_BATCH": str(self._settings.predict_max_batch)}
                if self._settings.torch_threads:
                    env["TUNEWIRE_TORCH_THREADS"] = str(self._settings.torch_threads)
                self._worker = await WorkerProcess.start(
                    "tunewire_server.worker.inference", self._settings.data_dir / "inference.log",
                    self._settings.worker_cwd, env)
                self._reader_task = asyncio.create_task(self._read(self._worker))
                log.info("inference worker started", pid=self._worker.pid)
            return self._worker

    async def _read(self, worker: WorkerProcess) -> None:
        async for message in worker.messages():
            stream = self._streams.get(message.get("id"))
            if stream is not None:
                stream.put_nowait(message)
                continue
            future = self._pending.pop(message.get("id"), None)
            if future is not None and not future.done():
                future.set_result(message)
        code = await worker.wait()
        log.warning("inference worker exited", code=code)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(Unavailable("the inference worker stopped; try again"))
        self._pending.clear()
        for stream in self._streams.values():
            stream.put_nowait({"ok": False, "error": {"kind": "unavailable",
                                                      "message": "the inference worker stopped; try again"}})

    def _cancel(self, worker: WorkerProcess, request_id: int) -> None:
        """Tell the worker to stop a request; synchronous, so it also works from a cancelled task."""
        stdin = worker.proc.stdin
        if worker.proc.returncode is None and stdin is not None and not stdin.is_closing():
            with contextlib.suppress(ConnectionError, RuntimeError):
                stdin.write(json.dumps({"op": "cancel", "id": request_id}).encode() + b"\n")

    async def predict(self, model_dir: str, request: dict) -> list[dict]:
        _check_generation(request)
        worker = await self._ensure_worker()
        request_id = next(self._ids)
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
        if answer.get("ok"):
            return answer["predictions"]
        raise _error_from(answer.get("error", {}))

    async def predict_stream(self, model_dir: str, request: dict) -> AsyncIterator[dict]:
        """Yield {"text_delta": str} as text is generated, then {"final": {text, num_tokens, finish_reason}}.

        A consumer that stops early (closes the iterator or is cancelled) stops the generation."""
        _check_generation(request)
        worker = await self._ensure_worker()
        request_id = next(self._ids)
        queue: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = queue
        finished = False
        try:
            await worker.send({"id": request_id, "op": "generate_stream", "model_dir": model_dir, **request})
            while True:
                message = await queue.get()
                if "delta" in message:
                    yield {"text_delta": message["delta"]}
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


def _error_from(error: dict) -> TunewireError:
    kind, message = error.get("kind"), error.get("message", "prediction failed")
    if kind == "invalid":
        return InvalidSpec(FieldViolation(error.get("field") or "inputs", message))
    if kind == "precondition":
        return FailedPrecondition(message)
    if kind == "unavailable":
        return Unavailable(message)
    return TunewireError(message)
