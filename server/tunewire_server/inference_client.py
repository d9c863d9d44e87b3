"""The control plane's side of the long-lived inference worker.

The worker starts on the first Predict and stays up, keeping recently used models loaded. Requests
carry an id; answers come back in any order and resolve the matching future. If the worker dies,
pending requests fail and the next request starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import structlog

from tunewire_server.config import Settings
from tunewire_server.errors import FailedPrecondition, FieldViolation, InvalidSpec, TunewireError, Unavailable
from tunewire_server.workers import WorkerProcess

log = structlog.get_logger("tunewire.inference")


class InferenceClient:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._worker: WorkerProcess | None = None
        self._reader_task: asyncio.Task | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._start_lock = asyncio.Lock()

    async def _ensure_worker(self) -> WorkerProcess:
        async with self._start_lock:
            if self._worker is None or self._worker.proc.returncode is not None:
                env = {"TUNEWIRE_CACHE_SIZE": str(self._settings.inference_cache_size)}
                if self._settings.torch_threads:
                    env["TUNEWIRE_TORCH_THREADS"] = str(self._settings.torch_threads)
                self._worker = await WorkerProcess.start(
                    "tunewire_server.worker.inference", self._settings.data_dir / "inference.log", env)
                self._reader_task = asyncio.create_task(self._read(self._worker))
                log.info("inference worker started", pid=self._worker.pid)
            return self._worker

    async def _read(self, worker: WorkerProcess) -> None:
        async for message in worker.messages():
            future = self._pending.pop(message.get("id"), None)
            if future is not None and not future.done():
                future.set_result(message)
        code = await worker.wait()
        log.warning("inference worker exited", code=code)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(Unavailable("the inference worker stopped; try again"))
        self._pending.clear()

    async def predict(self, model_dir: str, request: dict) -> list[dict]:
        worker = await self._ensure_worker()
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await worker.send({"id": request_id, "op": "predict", "model_dir": model_dir, **request})
            answer = await future
        finally:
            self._pending.pop(request_id, None)
        if answer.get("ok"):
            return answer["predictions"]
        raise _error_from(answer.get("error", {}))

    async def predict_stream(self, model_dir: str, request: dict):
        """Streaming generation; implemented with SFT support."""
        raise FailedPrecondition("streaming generation is not available on this server yet")
        yield  # pragma: no cover

    async def close(self) -> None:
        if self._worker is not None:
            await self._worker.close(grace_s=5)
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task


def _error_from(error: dict) -> TunewireError:
    kind, message = error.get("kind"), error.get("message", "prediction failed")
    if kind == "invalid":
        return InvalidSpec(FieldViolation(error.get("field") or "inputs", message))
    if kind == "precondition":
        return FailedPrecondition(message)
    return TunewireError(message)
