"""The job manager: accepts jobs, runs them one at a time in FIFO order, records and fans out events.

It never imports grpc or torch. The servicer translates protobuf requests into calls on this class,
and domain errors (errors.py) out of it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import math
import os
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from tunewire.v1 import job_pb2
from tunewire_server import validation
from tunewire_server.checkpoints import load_or_create_key
from tunewire_server.config import Settings
from tunewire_server.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidSpec,
    NotFound,
    ResourceExhausted,
)
from tunewire_server.events import EventHub
from tunewire_server.inference_client import InferenceClient
from tunewire_server.observability import Metrics
from tunewire_server.states import TERMINAL, IllegalTransition, JobState, check_transition
from tunewire_server.store import Event, JobRecord, Store
from tunewire_server.worker.artifacts import MODEL_DIR
from tunewire_server.workers import CHECKPOINT_SIGNAL, STOP_SIGNAL, WorkerProcess, describe_exit

log = structlog.get_logger("tunewire.manager")

MAX_REQUEST_ID = 128
RESTART_ALLOWANCE = 2  # server restarts a job may live through, on top of its retries


@dataclass
class _Running:
    job_id: str
    worker: WorkerProcess | None = None  # None while the worker is being taken or started
    cancel_requested: bool = False


class _Recorder:
    """Stores and publishes a running job's progress events in the order they came, as many to a
    transaction as arrived during the previous one: a fast job's events never queue up behind an fsync
    each, and subscribers see them as soon as the store holds them."""

    def __init__(self, write: Callable[[list[tuple[str, dict]]], Awaitable[None]]) -> None:
        self._write = write
        self._pending: list[tuple[str, dict]] = []
        self._arrived = asyncio.Event()
        self._closed = False
        self._task = asyncio.create_task(self._run())

    def add(self, kind: str, payload: dict) -> None:
        self._pending.append((kind, payload))
        self._arrived.set()

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            batch, self._pending = self._pending, []
            if batch:
                await self._write(batch)
            if self._closed and not self._pending:
                return

    async def close(self) -> None:
        """Wait until everything added is stored and published (and raise if storing failed)."""
        self._closed = True
        self._arrived.set()
        await self._task


def _kill_orphan(job_dir: Path) -> None:
    """A worker of a server that died (kill -9) may still run: stop it before the job is resumed."""
    pid_file = job_dir / "worker.pid"
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"tunewire_server.worker" in cmdline:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        log.warning("killed an orphaned worker", pid=pid)
    pid_file.unlink(missing_ok=True)


def new_job_id() -> str:
    return "job-" + uuid.uuid4().hex[:16]


class JobManager:
    def __init__(self, settings: Settings, store: Store, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics or Metrics()
        self.hub = EventHub(store)
        self.inference = InferenceClient(settings)
        self._wakeup = asyncio.Event()
        self._running: _Running | None = None
        self._warm: WorkerProcess | None = None
        self._warm_task: asyncio.Task | None = None
        self._scheduler: asyncio.Task | None = None
        self._submit_lock = asyncio.Lock()
        self._stopping = False
        self._checkpoint_key = b""
        self._tasks: set[asyncio.Task] = set()
        self._state_lock = asyncio.Lock()

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        for folder in (self.settings.jobs_dir, self.settings.model_root, self.settings.dataset_root,
                       self.settings.data_dir / "workers"):
            folder.mkdir(parents=True, exist_ok=True)
        self._checkpoint_key = load_or_create_key(self.settings.data_dir)
        await self._recover()
        for job in self.store.jobs_in_states([JobState.QUEUED]):
            self.hub.open(job.id)
        self._ensure_warm()
        self._scheduler = asyncio.create_task(self._schedule(), name="tunewire-scheduler")

    async def stop(self) -> None:
        """Stop taking jobs. The running worker saves a checkpoint and stops; its job stays RUNNING,
        and the next start resumes it from that checkpoint."""
        self._stopping = True
        self._wakeup.set()
        running = self._running
        if running is not None and running.worker is not None:
            running.worker.signal(CHECKPOINT_SIGNAL)
            try:
                await asyncio.wait_for(asyncio.shield(running.worker.wait()), self.settings.shutdown_grace_s)
            except TimeoutError:
                log.warning("worker did not checkpoint in time; killing it", job_id=running.job_id)
                running.worker.kill()
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        if self._running is not None and self._running.worker is not None:
            self._running.worker.kill()  # it was still starting when the scheduler stopped
        if self._warm_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._warm_task
        if self._warm is not None:
            await self._warm.close(grace_s=2)
        await self.inference.close()

    async def _recover(self) -> None:
        """Resolve the jobs a previous server process left behind."""
        for job in self.store.jobs_in_states([JobState.RUNNING, JobState.CANCELLING]):
            self.hub.open(job.id)
            _kill_orphan(self.settings.jobs_dir / job.id)
            if job.state == JobState.CANCELLING:
                await self._finish(job.id, JobState.CANCELLED, message="cancelled while the server was down")
            elif job.attempts > self._max_attempts(job):
                await self._finish(job.id, JobState.FAILED, error={
                    "code": "SERVER_RESTARTED", "kind": "SYSTEM", "field": "",
                    "message": f"the server stopped while the job ran, {job.attempts} times; giving up"})
            else:
                await self._set_state(job.id, JobState.QUEUED,
                                      message="the server restarted; resuming from the last complete checkpoint")

    def _max_attempts(self, job: JobRecord) -> int:
        spec = validation.spec_from_json(job.spec_json)
        return 1 + spec.max_retries + RESTART_ALLOWANCE

    # --- commands ------------------------------------------------------------------------------

    async def submit(self, spec: job_pb2.JobSpec, request_id: str = "") -> JobRecord:
        if len(request_id) > MAX_REQUEST_ID:
            raise InvalidSpec(FieldViolation("request_id", f"must be at most {MAX_REQUEST_ID} characters"))
        if request_id:
            existing = self.store.get_job_by_request_id(request_id)
            if existing is not None:
                return self._same_request(existing, spec)
        try:
            plan = await asyncio.to_thread(validation.validate, spec, self.settings)
        except InvalidSpec:
            self.metrics.jobs_submitted.labels("refused").inc()
            raise
        spec_json = validation.spec_to_json(spec)
        async with self._submit_lock:
            if request_id and (existing := self.store.get_job_by_request_id(request_id)) is not None:
                return self._same_request(existing, spec)
            queued = self.store.count_in_states([JobState.QUEUED])
            if queued >= self.settings.max_queued_jobs:
                raise ResourceExhausted(f"the queue is full ({queued} jobs waiting); try again later")
            job_id = new_job_id()
            job_dir = self.settings.jobs_dir / job_id
            job_dir.mkdir(parents=True)
            (job_dir / "plan.json").write_text(json.dumps(plan))
            job = await self.store.write(
                self.store.create_job, job_id, spec_json, request_id or None,
                ("state_change", {"state": JobState.QUEUED.value, "message": "queued"}))
            self.hub.open(job_id)
        self.metrics.jobs_submitted.labels("accepted").inc()
        log.info("job queued", job_id=job_id, task=plan["task"], base_model=spec.base_model)
        if self._running is not None:
            self._ensure_warm()  # this job waits behind another: have its worker ready when that one ends
        self._wakeup.set()
        return job

    def _same_request(self, existing: JobRecord, spec: job_pb2.JobSpec) -> JobRecord:
        if existing.spec_json != validation.spec_to_json(spec):
            raise AlreadyExists(f"request_id was already used for job {existing.id} with a different spec")
        return existing

    def get(self, job_id: str) -> JobRecord:
        job = self.store.get_job(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job

    def list(self, states: Sequence[JobState], page_size: int, page_token: str) -> tuple[list[JobRecord], str]:
        size = min(page_size or 50, 500)
        before = None
        if page_token:
            try:
                before = int(base64.urlsafe_b64decode(page_token.encode()).decode())
            except ValueError:
                raise InvalidSpec(FieldViolation("page_token", "is not a token this server issued")) from None
        jobs = self.store.list_jobs(states, before, size + 1)
        next_token = ""
        if len(jobs) > size:
            jobs = jobs[:size]
            next_token = base64.urlsafe_b64encode(str(jobs[-1].ordinal).encode()).decode()
        return jobs, next_token

    async def cancel(self, job_id: str) -> JobRecord:
        for _ in range(2):  # a second look if the job moved on while we decided
            job = self.get(job_id)
            if job.terminal or job.state == JobState.CANCELLING:
                return job
            running = self._running if self._running is not None and self._running.job_id == job_id else None
            try:
                if job.state == JobState.QUEUED:
                    if running is not None:
                        running.cancel_requested = True  # picked but not started: _run will not start it
                    await self._finish(job_id, JobState.CANCELLED, message="cancelled before it started")
                elif running is not None:
                    running.cancel_requested = True
                    await self._set_state(job_id, JobState.CANCELLING, message="cancel requested")
                    if running.worker is not None:
                        self._stop_worker(running)
                log.info("job cancel requested", job_id=job_id)
                break
            except IllegalTransition:
                continue
        return self.get(job_id)

    def _stop_worker(self, running: _Running) -> None:
        running.worker.signal(STOP_SIGNAL)
        self._background(self._kill_after_grace(running))

    def _background(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _kill_after_grace(self, running: _Running) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(running.worker.wait()), self.settings.cancel_grace_s)
        except TimeoutError:
            log.warning("worker ignored cancel; killing it", job_id=running.job_id)
            running.worker.kill()

    async def event_batches(self, job_id: str, after_seq: int) -> AsyncIterator[list[Event]]:
        """A job's events after `after_seq`, as lists of what is pending (see EventHub.follow_batches)."""
        self.get(job_id)  # NOT_FOUND before the stream starts
        async for batch in self.hub.follow_batches(job_id, after_seq):
            yield batch

    def _model_dir(self, job_id: str) -> str:
        job = self.get(job_id)
        if job.state != JobState.SUCCEEDED:
            raise FailedPrecondition(f"job {job_id} is {job.state.value}; only a SUCCEEDED job can predict")
        model_dir = self.settings.jobs_dir / job_id / MODEL_DIR
        if not model_dir.is_dir():
            raise FailedPrecondition(f"job {job_id} has no finished model on disk")
        return str(model_dir)

    async def predict(self, job_id: str, request: dict) -> list[dict]:
        """request: {inputs: [str], conversations: [{messages: [...]}], generation: {...}}."""
        model_dir = self._model_dir(job_id)
        n = len(request.get("inputs") or []) + len(request.get("conversations") or [])
        if n == 0:
            raise InvalidSpec(FieldViolation("inputs", "send at least one input"))
        if n > self.settings.max_predict_inputs:
            raise InvalidSpec(FieldViolation("inputs", f"at most {self.settings.max_predict_inputs} inputs per call"))
        return await self.inference.predict(model_dir, request)

    async def predict_stream(self, job_id: str, request: dict) -> AsyncIterator[dict]:
        """request: {text: str} or {conversation: {messages: [...]}}, plus generation.

        Yields {"text_delta": str} messages, then {"final": {...}}. Closing the iterator (the client
        cancelled) stops the generation in the inference worker.
        """
        model_dir = self._model_dir(job_id)
        if not request.get("text") and not request.get("conversation"):
            raise InvalidSpec(FieldViolation("text", "send a text or a conversation"))
        async for message in self.inference.predict_stream(model_dir, request):
            yield message

    # --- scheduler -----------------------------------------------------------------------------

    async def _schedule(self) -> None:
        while not self._stopping:
            queued = self.store.jobs_in_states([JobState.QUEUED])
            if not queued:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            job = queued[0]
            try:
                await self._run(job)
            except Exception:  # the scheduler must outlive any one job
                log.exception("job supervision failed", job_id=job.id)
                current = self.store.get_job(job.id)
                if current is not None and not current.terminal:
                    await self._finish(job.id, JobState.FAILED, error={
                        "code": "INTERNAL", "kind": "SYSTEM", "field": "",
                        "message": "the server could not run this job"})

    def _ensure_warm(self) -> None:
        """Start the next job's training worker unless one is started or starting. Called at start-up,
        when a job ends, and when a job is queued behind a running one: a worker importing torch beside
        a running job would slow it, so none is started while a job runs with nothing queued."""
        if not self.settings.warm_worker or self._stopping or self._warm is not None:
            return
        if self._warm_task is None or self._warm_task.done():
            self._warm_task = asyncio.create_task(self._spawn_warm())

    async def _spawn_warm(self) -> None:
        """Start the next training worker now, so that its imports are done when a job arrives."""
        try:
            self._warm = await self._start_worker(self.settings.data_dir / "workers" / "warm.log")
        except Exception:
            log.exception("could not start a warm worker")

    async def _start_worker(self, log_path: Path) -> WorkerProcess:
        env = {"TUNEWIRE_TRAINING_NICENESS": str(self.settings.training_niceness)}
        if self.settings.torch_threads:
            env["TUNEWIRE_TORCH_THREADS"] = str(self.settings.torch_threads)
        return await WorkerProcess.start("tunewire_server.worker.training", log_path, self.settings.worker_cwd, env)

    async def _take_worker(self, job_dir: Path) -> WorkerProcess:
        """The warm worker if it is healthy, else a fresh one; either has sent `ready`."""
        if self._warm_task is not None:
            await self._warm_task
            self._warm_task = None
        worker, self._warm = self._warm, None
        try:
            for _ in range(2):
                if worker is None:
                    worker = await self._start_worker(job_dir / "worker.log")
                ready = await worker.receive()  # a warm worker sent it long ago
                if ready is not None and ready.get("kind") == "ready":
                    break
                log.warning("a training worker failed to start", code=await worker.wait())
                worker = None
            else:
                raise RuntimeError("training workers fail to start; see the worker logs")
        except BaseException:  # stopped while the worker was starting: it belongs to no job, end it
            if worker is not None:
                worker.kill()
            raise
        if self.store.count_in_states([JobState.QUEUED]):
            self._ensure_warm()  # the next job is already waiting
        return worker

    async def _run(self, job: JobRecord) -> None:
        job_dir = self.settings.jobs_dir / job.id
        plan = json.loads((job_dir / "plan.json").read_text())
        attempt = job.attempts + 1
        running = self._running = _Running(job.id)
        try:
            await self._set_state(job.id, JobState.RUNNING,
                                  message=f"attempt {attempt}" if attempt > 1 else "started")
        except IllegalTransition:  # cancelled between being picked and being started
            self._running = None
            return
        await self.store.write(self.store.update_job, job.id, attempts=attempt,
                               started_at=job.started_at or time.time())
        bound = log.bind(job_id=job.id)
        try:
            worker = running.worker = await self._take_worker(job_dir)
        except BaseException:
            self._running = None
            raise
        (job_dir / "worker.pid").write_text(str(worker.pid))
        bound.info("worker assigned", pid=worker.pid, attempt=attempt)
        await worker.send({
            "job_id": job.id, "spec": json.loads(job.spec_json), "plan": plan, "job_dir": str(job_dir),
            "log_path": str(job_dir / "worker.log"), "checkpoint_key": self._checkpoint_key.hex(),
            "nan_loss_steps": self.settings.nan_loss_steps, "train_processes": self.settings.train_processes,
        })
        if running.cancel_requested:  # cancelled while the worker was being readied
            self._stop_worker(running)
        elif self._stopping:
            worker.signal(CHECKPOINT_SIGNAL)
        result: dict | None = None
        error: dict | None = None
        recorder = _Recorder(functools.partial(self._record, job.id))
        try:
            try:
                async for message in worker.messages():
                    kind = message.pop("kind", None)
                    if kind == "result":
                        result = message
                    elif kind == "error":
                        error = message["error"]
                    elif kind in ("train_log", "eval_result", "checkpoint_saved"):
                        recorder.add(kind, message)
            finally:
                await recorder.close()
            code = await worker.wait()
        finally:
            self._running = None
            (job_dir / "worker.pid").unlink(missing_ok=True)
            self._ensure_warm()
        bound.info("worker exited", code=code)
        if running.cancel_requested:
            shutil.rmtree(job_dir / (MODEL_DIR + ".partial"), ignore_errors=True)
            await self._finish(job.id, JobState.CANCELLED, message="cancelled")
        elif code == 0 and result is not None and (job_dir / MODEL_DIR).is_dir():
            await self._finish(job.id, JobState.SUCCEEDED, message="finished", metrics=result.get("metrics"))
        elif self._stopping and error is None:
            bound.info("left RUNNING for the next start to resume")
        else:
            error = error or {"code": "WORKER_CRASHED", "kind": "SYSTEM", "field": "", "message": describe_exit(code)}
            spec = validation.spec_from_json(job.spec_json)
            if error.get("kind") == "SYSTEM" and attempt <= spec.max_retries:
                await self._set_state(job.id, JobState.QUEUED, error=error,
                                      message=f"{error['message']}; retrying from the last complete checkpoint "
                                              f"({attempt} of {spec.max_retries} retries)")
            else:
                await self._finish(job.id, JobState.FAILED, error=error)

    async def _record(self, job_id: str, messages: list[tuple[str, dict]]) -> None:
        """Store a worker's progress messages as events (one transaction), then publish them."""
        items = []
        for kind, payload in messages:
            fields: dict = {}
            if kind == "train_log":
                self.metrics.train_log(payload)
                if "progress" in payload:
                    fields["progress"] = payload["progress"]
            if kind == "eval_result":
                fields["metrics"] = {k: v for k, v in payload.get("metrics", {}).items()
                                     if isinstance(v, (int, float)) and math.isfinite(v)}
            at = payload.pop("time", None)
            items.append((kind, payload, fields, at))
        for event in await self.store.write(self.store.append_events, job_id, items):
            await self.hub.publish(event)

    # --- state changes -------------------------------------------------------------------------

    async def _set_state(self, job_id: str, state: JobState, *, message: str = "", error: dict | None = None,
                         extra: dict | None = None) -> Event:
        async with self._state_lock:  # read, check and write as one step: writes await a thread
            current = self.store.get_job(job_id)
            assert current is not None
            check_transition(current.state, state)
            payload: dict = {"state": state.value, "message": message}
            if error:
                payload["error"] = error
            fields = {"state": state, **(extra or {})}
            if error:
                fields["error"] = error
            event = await self.store.write(self.store.append_event, job_id, "state_change", payload, fields)
            await self.hub.publish(event)
        return event

    async def _finish(self, job_id: str, state: JobState, *, message: str = "", error: dict | None = None,
                      metrics: dict | None = None) -> None:
        assert state in TERMINAL
        extra: dict = {"ended_at": time.time()}
        if state != JobState.FAILED:
            extra["error"] = None  # an error from an earlier, retried attempt no longer applies
        if state == JobState.SUCCEEDED:
            extra["progress"] = 1.0
        if metrics:
            extra["metrics"] = metrics
        await self._set_state(job_id, state, message=message or (error or {}).get("message", ""),
                              error=error, extra=extra)
        await self.hub.close(job_id)
        job = self.store.get_job(job_id)
        self.metrics.job_ended(state, job.started_at if job else None, extra["ended_at"])
        log.info("job finished", job_id=job_id, state=state.value, error=(error or {}).get("code"))
