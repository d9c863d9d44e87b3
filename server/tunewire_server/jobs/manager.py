"""The job manager: accepts jobs, runs them one at a time in queue order, records and fans out events.

It never imports grpc or torch. The servicer translates protobuf requests into calls on this class,
and domain errors (errors.py) out of it. The scheduler outlives any failure of one job: a job whose end
cannot be stored (a full disk) keeps its outcome in memory until the store can write again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import math
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from tunewire.v1 import job_pb2
from tunewire_server import validation
from tunewire_server.bounded_pool import BoundedPool, PoolBusy
from tunewire_server.checkpoints import load_or_create_key
from tunewire_server.config import Settings
from tunewire_server.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidSpec,
    NotFound,
    ResourceExhausted,
    preview,
)
from tunewire_server.jobs import listing
from tunewire_server.jobs.events import EventHub
from tunewire_server.jobs.outcome import RESUME, Outcome, decide, retry_limit, system_error
from tunewire_server.jobs.recorder import EventRecorder
from tunewire_server.jobs.recovery import kill_orphan
from tunewire_server.jobs.states import TERMINAL, IllegalTransition, JobState, check_transition
from tunewire_server.observability import Metrics
from tunewire_server.resources import check_free_disk
from tunewire_server.store import BACK_OF_QUEUE, DiskFull, Event, JobRecord, Store, is_disk_full
from tunewire_server.worker.training.artifacts import MODEL_DIR
from tunewire_server.workers.inference import InferenceClient
from tunewire_server.workers.process import CHECKPOINT_SIGNAL, STOP_SIGNAL, WorkerProcess, describe_exit

log = structlog.get_logger("tunewire.manager")

RESTART_ALLOWANCE = 2  # server restarts a job may live through, on top of its retries
DISK_RETRY_S = (0.25, 5.0)  # first and longest pause between tries to write to a full disk


@dataclass
class _Running:
    job_id: str
    worker: WorkerProcess | None = None  # None while the worker is being taken or started
    cancel_requested: bool = False


def _disk_full_error() -> dict:
    return system_error("DISK_FULL", "the server's data disk filled up while the job ran: its progress could "
                                     "not be stored, so it was stopped")


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
        self._validation = BoundedPool(settings.validation_threads, "tunewire-validate")
        self._probe: asyncio.Task | None = None
        self._stopped = asyncio.Event()  # set by stop(): ends the pauses of a wait for disk space

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
        self._stopped.set()
        self._wakeup.set()
        running = self._running
        if running is not None and running.worker is not None:
            running.worker.signal(CHECKPOINT_SIGNAL)
            try:
                await asyncio.wait_for(asyncio.shield(running.worker.wait()), self.settings.shutdown_grace_s)
            except TimeoutError:
                log.warning("worker did not checkpoint in time; killing it", job_id=running.job_id)
                running.worker.kill()
        for task in (self._scheduler, self._probe):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                except Exception:  # it ended with an error before: say so, and go on stopping
                    log.exception("a background task had failed", task=task.get_name())
        if self._running is not None and self._running.worker is not None:
            self._running.worker.kill()  # it was still starting when the scheduler stopped
        if self._warm_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._warm_task
        if self._warm is not None:
            await self._warm.close(grace_s=2)
        self._validation.shutdown()
        await self.inference.close()

    def serving(self) -> bool:
        """Whether the server can take and run jobs: False while the store cannot write (a full disk)
        or the scheduler has stopped. Health checks poll this, on the event loop."""
        if self._stopping or self._scheduler is None or self._scheduler.done():
            return False
        if not self.store.writable:
            if self._probe is None or self._probe.done():  # nothing else may write soon: find out
                self._probe = asyncio.create_task(self._wait_writable(), name="tunewire-store-probe")
            return False
        return True

    async def _wait_writable(self) -> None:
        """Return once a small write to the store succeeds (at once if it does), or the server stops."""
        delay = DISK_RETRY_S[0]
        while not self._stopping:
            try:
                await self.store.write(self.store.probe)
                return
            except DiskFull:
                await self._pause(delay)
                delay = min(delay * 2, DISK_RETRY_S[1])

    async def _pause(self, seconds: float) -> None:
        """Sleep, but no longer than until stop()."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)

    async def _recover(self) -> None:
        """Resolve the jobs a previous server process left behind."""
        for job in self.store.jobs_in_states([JobState.RUNNING, JobState.CANCELLING]):
            self.hub.open(job.id)
            kill_orphan(self.settings.jobs_dir / job.id)
            if job.state == JobState.CANCELLING:
                await self._finish(job.id, JobState.CANCELLED, message="cancelled while the server was down")
            elif job.attempts > self._max_attempts(job):
                await self._finish(job.id, JobState.FAILED, error={
                    "code": "SERVER_RESTARTED", "kind": "SYSTEM", "field": "",
                    "message": f"the server stopped while the job ran, {job.attempts} times; giving up"})
            else:
                await self._set_state(job.id, JobState.QUEUED,
                                      message="the server restarted; resuming from the last complete checkpoint")

    def _max_retries(self, job: JobRecord) -> int:
        return retry_limit(validation.spec_from_json(job.spec_json).max_retries, self.settings.max_job_retries)

    def _max_attempts(self, job: JobRecord) -> int:
        return 1 + self._max_retries(job) + RESTART_ALLOWANCE

    # --- commands ------------------------------------------------------------------------------

    async def submit(self, spec: job_pb2.JobSpec, request_id: str = "") -> JobRecord:
        validation.check_request_id(request_id)
        if request_id:
            existing = self.store.get_job_by_request_id(request_id)
            if existing is not None:
                return self._same_request(existing, spec)
        check_free_disk(self.settings.data_dir, self.settings.min_free_disk_mb)
        try:
            plan = await self._validation.run(validation.validate, spec, self.settings,
                                              timeout=self.settings.validation_timeout_s)
        except InvalidSpec:
            self.metrics.jobs_submitted.labels("refused").inc()
            raise
        except PoolBusy as exc:
            self.metrics.jobs_submitted.labels("refused").inc()
            raise ResourceExhausted(f"the server is busy checking other jobs ({exc}); try again later") from None
        spec_json = validation.spec_to_json(spec)
        async with self._submit_lock:
            if request_id and (existing := self.store.get_job_by_request_id(request_id)) is not None:
                return self._same_request(existing, spec)
            queued = self.store.count_in_states([JobState.QUEUED])
            if queued >= self.settings.max_queued_jobs:
                raise ResourceExhausted(f"the queue is full ({queued} jobs waiting); try again later")
            job_id = new_job_id()
            job_dir = self.settings.jobs_dir / job_id
            try:
                job_dir.mkdir(parents=True)
                job = await self.store.write(
                    self.store.create_job, job_id, spec_json, request_id or None,
                    ("state_change", {"state": JobState.QUEUED.value, "message": "queued"}), json.dumps(plan))
            except (DiskFull, OSError) as exc:
                if not isinstance(exc, DiskFull) and not is_disk_full(exc):
                    raise
                shutil.rmtree(job_dir, ignore_errors=True)
                raise ResourceExhausted("the server's data disk is full; new jobs are refused until space "
                                        "is freed") from None
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
            raise NotFound(f"no job {preview(job_id)}")
        return job

    def list(self, states: Sequence[JobState], page_size: int, page_token: str) -> tuple[list[JobRecord], str]:
        size = min(page_size or 50, 500)
        before = None
        if page_token:
            try:
                before = int(base64.urlsafe_b64decode(page_token.encode()).decode())
            except ValueError:
                raise InvalidSpec(FieldViolation("page_token", "is not a token this server issued")) from None
        # Sized before read: a page never holds (nor reads) more than the message limit allows.
        sizes = self.store.list_sizes(states, before, size + 1)
        taken, more = listing.cut_page([bytes_ for _, bytes_ in sizes], size,
                                       listing.page_budget(self.settings.max_message_bytes))
        if not taken:
            return [], ""
        jobs = self.store.jobs_by_ordinals([ordinal for ordinal, _ in sizes[:taken]])
        next_token = base64.urlsafe_b64encode(str(sizes[taken - 1][0]).encode()).decode() if more else ""
        return jobs, next_token

    async def cancel(self, job_id: str) -> JobRecord:
        for _ in range(2):  # a second look if the job moved on while we decided
            job = self.get(job_id)
            if job.terminal or job.state == JobState.CANCELLING:
                return job
            running = self._running if self._running is not None and self._running.job_id == job_id else None
            try:
                if job.state == JobState.QUEUED:  # a claim in between makes this illegal: look again
                    await self._finish(job_id, JobState.CANCELLED, message="cancelled before it started")
                else:  # RUNNING; with no worker here it is ending: its outcome gives way to the cancel
                    if running is not None:
                        running.cancel_requested = True
                    try:
                        await self._set_state(job_id, JobState.CANCELLING, message="cancel requested")
                    finally:  # stopped even if the disk is full: the job ends CANCELLED when it can be stored
                        if running is not None and running.worker is not None:
                            self._stop_worker(running)
                log.info("job cancel requested", job_id=job_id)
                break
            except IllegalTransition:
                continue
            except DiskFull:
                raise ResourceExhausted("the server's data disk is full: the cancel cannot be recorded now") from None
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
        """Run queued jobs one at a time, in queue order, until stopped. Nothing one job does ends it."""
        delay = DISK_RETRY_S[0]
        while not self._stopping:
            try:
                self._wakeup.clear()  # before the claim: a job queued while it is under way sets it again
                job = await self._claim()
                if job is None:
                    await self._wakeup.wait()
                    continue
                await self._supervise(job)
                delay = DISK_RETRY_S[0]
            except Exception:  # e.g. the store could not be read: pause, then look again
                log.exception("the scheduler's pass failed; trying again")
                await self._pause(delay)
                delay = min(delay * 2, DISK_RETRY_S[1])

    async def _claim(self) -> JobRecord | None:
        """Take the next queued job from the store, RUNNING now, and name it in `_running`; None when
        nothing is queued, or when the disk was full (returned once the store can write again)."""
        try:
            async with self._state_lock:  # as _set_state: no other state change falls between
                claimed = await self.store.write(self.store.claim_next)
                if claimed is None:
                    return None
                job, event = claimed
                self._running = _Running(job.id)
                await self.hub.publish(event)
        except DiskFull:
            log.warning("the disk is full: the next job waits until the store can write")
            await self._wait_writable()
            self._wakeup.set()  # look again
            return None
        return job

    async def _supervise(self, job: JobRecord) -> None:
        """Run one job and store how it ended; if the store cannot write that yet, keep it and retry."""
        try:
            outcome = await self._run(job)
        except Exception as exc:
            log.exception("job supervision failed", job_id=job.id)
            current = self.store.get_job(job.id)
            if current is None or current.terminal:
                return
            outcome = Outcome(JobState.FAILED, "", error=_disk_full_error() if isinstance(exc, DiskFull)
                              else system_error("INTERNAL", "the server could not run this job"))
        await self._conclude(job.id, outcome)

    async def _conclude(self, job_id: str, outcome: Outcome) -> None:
        """Store the outcome, trying again (with pauses) while the disk is full; on stop(), the job stays
        RUNNING and the next start resolves it."""
        delay = DISK_RETRY_S[0]
        while True:
            try:
                await self._apply(job_id, outcome)
                return
            except DiskFull:
                if self._stopping:
                    log.warning("the job's end could not be stored before the server stopped", job_id=job_id)
                    return
                if delay == DISK_RETRY_S[0]:
                    log.warning("the disk is full: the job's end is kept until it can be stored", job_id=job_id,
                                state=outcome.state.value)
                await self._pause(delay)
                delay = min(delay * 2, DISK_RETRY_S[1])
            except IllegalTransition:
                current = self.store.get_job(job_id)
                if current is None or current.terminal:
                    return
                if current.state != JobState.CANCELLING:
                    raise
                outcome = Outcome(JobState.CANCELLED, "cancelled")  # a cancel came as it ended

    async def _apply(self, job_id: str, outcome: Outcome) -> None:
        if outcome.state == RESUME:
            log.info(outcome.message, job_id=job_id)
        elif outcome.state == JobState.QUEUED:  # a retry waits behind every job queued before it
            await self._set_state(job_id, JobState.QUEUED, message=outcome.message, error=outcome.error,
                                  extra={"queue_seq": BACK_OF_QUEUE})
            self._wakeup.set()
        else:
            await self._finish(job_id, outcome.state, message=outcome.message, error=outcome.error,
                               metrics=outcome.metrics)

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
        return await WorkerProcess.start("tunewire_server.worker.training.main", log_path, self.settings.worker_cwd, env)

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

    async def _run(self, job: JobRecord) -> Outcome:
        """Run the attempt `job` was claimed for (it is RUNNING, `_running` names it) and return how it
        ended."""
        job_dir = self.settings.jobs_dir / job.id
        attempt = job.attempts
        running = self._running
        assert running is not None and running.job_id == job.id
        bound = log.bind(job_id=job.id)
        try:
            plan = job.plan  # a job queued before plans were stored with it has its plan.json
            if plan is None:
                plan = json.loads((job_dir / "plan.json").read_text())
            worker = running.worker = await self._take_worker(job_dir)
        except BaseException:
            self._running = None
            raise
        try:
            return await self._watch(job, job_dir, plan, attempt, running, worker)
        except BaseException:
            worker.kill()  # supervision failed (or the server stops): the worker belongs to no job now
            raise
        finally:
            self._running = None
            with contextlib.suppress(OSError):
                (job_dir / "worker.pid").unlink(missing_ok=True)
            self._ensure_warm()
            bound.debug("attempt ended", attempt=attempt)

    async def _watch(self, job: JobRecord, job_dir: Path, plan: dict, attempt: int, running: _Running,
                     worker: WorkerProcess) -> Outcome:
        """Hand the job to its worker, store its progress, and decide how the attempt ended."""
        bound = log.bind(job_id=job.id)
        try:
            (job_dir / "worker.pid").write_text(str(worker.pid))
        except OSError as exc:  # only a killed server's next start needs it (to end an orphan)
            bound.warning("could not write worker.pid", error=str(exc))
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

        def storing_failed(exc: Exception) -> None:
            if isinstance(exc, DiskFull):
                bound.warning("the disk is full: the job's progress cannot be stored; stopping its worker")
            else:
                bound.error("the job's progress could not be stored; stopping its worker", exc_info=exc)
            self._stop_worker(running)

        result: dict | None = None
        error: dict | None = None
        recorder = EventRecorder(functools.partial(self._record, job.id), storing_failed)
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
        bound.info("worker exited", code=code)
        recording_error = None
        if recorder.failure is not None:
            recording_error = (_disk_full_error() if isinstance(recorder.failure, DiskFull)
                               else system_error("INTERNAL", "the server could not store the job's progress"))
        outcome = decide(exit_code=code, exit_description=describe_exit(code), result=result,
                         model_saved=(job_dir / MODEL_DIR).is_dir(), error=error,
                         cancel_requested=running.cancel_requested, stopping=self._stopping,
                         recording_error=recording_error, attempt=attempt, max_retries=self._max_retries(job))
        if outcome.state == JobState.CANCELLED:
            shutil.rmtree(job_dir / (MODEL_DIR + ".partial"), ignore_errors=True)
        return outcome

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
