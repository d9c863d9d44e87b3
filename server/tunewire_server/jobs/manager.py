"""The job manager: the facade the gRPC servicer calls (submit, get, list, cancel, pause, resume, events,
predict).

It never imports grpc or torch. The servicer translates protobuf requests into calls on this class, and
domain errors (errors.py) out of it. Running jobs is the scheduler's (jobs/scheduler.py), on workers from
the warm pool (workers/pool.py) started through a launcher (workers/launcher.py); state changes go
through jobs/transitions.py. With a shared store (several replicas, one queue) the store's notices (its
LISTEN connection) wake this replica's scheduler when a job is queued anywhere, and its event followers
and running job when events are stored anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

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
from tunewire_server.jobs.recovery import recover
from tunewire_server.jobs.scheduler import Scheduler
from tunewire_server.jobs.states import IllegalTransition, JobState
from tunewire_server.jobs.transitions import Transitions
from tunewire_server.layout import MODEL_DIR
from tunewire_server.observability import Metrics
from tunewire_server.resources import check_free_disk
from tunewire_server.store import BACK_OF_QUEUE, DiskFull, Event, JobRecord, Notice, Store
from tunewire_server.workers.inference import InferenceClient
from tunewire_server.workers.launcher import ProcessLauncher, TrainingLauncher
from tunewire_server.workers.pool import WarmPool

log = structlog.get_logger("tunewire.manager")


class JobManager:
    """Jobs for the API. `launcher` starts training workers (a fake in scheduler tests)."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics | None = None,
                 launcher: TrainingLauncher | None = None) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics or Metrics()
        self.hub = EventHub(store, poll_s=settings.event_poll_s)
        self.inference = InferenceClient(settings)
        self.transitions = Transitions(store, self.hub, self.metrics)
        self.pool = WarmPool(launcher or ProcessLauncher(settings), settings.data_dir / "workers" / "warm.log",
                             enabled=settings.warm_worker)
        self.scheduler = Scheduler(settings, store, self.transitions, self.pool, self.metrics)
        self._submit_lock = asyncio.Lock()
        self._validation = BoundedPool(settings.validation_threads, "tunewire-validate")
        self._unlisten: Callable[[], None] | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the folders, resolve what a previous server left, and start scheduling."""
        for folder in (self.settings.jobs_dir, self.settings.model_root, self.settings.dataset_root,
                       self.settings.data_dir / "workers"):
            folder.mkdir(parents=True, exist_ok=True)
        self.scheduler.checkpoint_key = load_or_create_key(self.settings.data_dir)
        loop = asyncio.get_running_loop()
        self._unlisten = self.store.listen(lambda notice: self._from_listener(loop, notice))
        await recover(self.transitions, self.settings.jobs_dir, self.settings.max_job_retries)
        for job in self.store.jobs_in_states([JobState.QUEUED, JobState.PAUSED]):
            self.hub.open(job.id)  # live: their streams follow them until they end
        self.scheduler.warm_next()
        self.scheduler.start()

    async def stop(self) -> None:
        """Stop taking jobs. The running worker saves a checkpoint and stops; its job stays RUNNING, and
        the next start resumes it from that checkpoint (a shared store: it is queued again at once, for
        another replica to resume)."""
        await self.scheduler.stop()
        if self._unlisten is not None:
            await asyncio.to_thread(self._unlisten)
            self._unlisten = None
        await self.hub.aclose()
        await self.pool.close()
        self._validation.shutdown()
        await self.inference.close()

    def _from_listener(self, loop: asyncio.AbstractEventLoop, notice: Notice) -> None:
        """Called on the store's listening thread: hand the notice to the event loop."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to tell
            loop.call_soon_threadsafe(self._on_notice, notice)

    def _on_notice(self, notice: Notice) -> None:
        """A job was queued (wake the scheduler) or events were stored (wake their followers, and the
        running job's check for a cancel) by any replica."""
        if notice.queued:
            self.scheduler.wake()
        else:
            self.hub.notify(notice.job_id)
            self.scheduler.notice(notice.job_id)

    def after_success(self, callback: Callable[[str], None]) -> None:
        """Call `callback(job_id)` on the event loop each time a job's SUCCEEDED state is stored (the server
        hands it the retention sweeper's job_succeeded). It must return at once."""
        self.scheduler.on_succeeded = callback

    def serving(self) -> bool:
        """Whether the server can take and run jobs: False while the store cannot write (a full disk)
        or the scheduler has stopped. Health checks poll this, on the event loop."""
        return self.scheduler.serving()

    # --- commands ------------------------------------------------------------------------------

    async def submit(self, spec: job_pb2.JobSpec, request_id: str = "") -> JobRecord:
        """Validate and queue a job (or return the job an earlier call with this request_id queued)."""
        validation.check_request_id(request_id)
        if request_id and (existing := self.store.get_job_by_request_id(request_id)) is not None:
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
            try:
                job = await self.transitions.create(self.settings.jobs_dir, spec_json, request_id or None, plan)
            except Exception:  # another replica stored this request_id first (the store's unique index)
                if request_id and (existing := self.store.get_job_by_request_id(request_id)) is not None:
                    return self._same_request(existing, spec)
                raise
        self.metrics.jobs_submitted.labels("accepted").inc()
        log.info("job queued", job_id=job.id, task=plan["task"], base_model=spec.base_model)
        if self.scheduler.running is not None:
            self.scheduler.warm_next()  # this job waits behind another: have its worker ready when that one ends
        self.scheduler.wake()
        return job

    def _same_request(self, existing: JobRecord, spec: job_pb2.JobSpec) -> JobRecord:
        if existing.spec_json != validation.spec_to_json(spec):
            raise AlreadyExists(f"request_id was already used for job {existing.id} with a different spec")
        return existing

    def get(self, job_id: str) -> JobRecord:
        """The job, or NotFound."""
        job = self.store.get_job(job_id)
        if job is None:
            raise NotFound(f"no job {preview(job_id)}")
        return job

    def list(self, states: Sequence[JobState], page_size: int, page_token: str) -> tuple[list[JobRecord], str]:
        """One page of jobs, newest first, and the token of the next page ("" at the end)."""
        return listing.page(self.store, states, page_size, page_token, self.settings.max_message_bytes)

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job at once; a running one goes CANCELLING and its worker is stopped."""
        for _ in range(2):  # a second look if the job moved on while we decided
            job = self.get(job_id)
            if job.terminal or job.state == JobState.CANCELLING:
                return job
            running = self.scheduler.attempt_of(job_id)
            try:
                if job.state == JobState.QUEUED:  # a claim in between makes this illegal: look again
                    await self.transitions.finish(job_id, JobState.CANCELLED, message="cancelled before it started")
                elif job.state == JobState.PAUSED:  # no worker: a resume in between makes this illegal
                    await self.transitions.finish(job_id, JobState.CANCELLED, message="cancelled while paused")
                else:  # RUNNING or PAUSING; with no attempt here it is ending: its outcome gives way to the cancel
                    if running is not None:
                        running.cancel_requested = True
                    try:
                        await self.transitions.set_state(job_id, JobState.CANCELLING, message="cancel requested")
                    finally:  # stopped even if the disk is full: the job ends CANCELLED when it can be stored
                        if running is not None and running.worker is not None:
                            self.scheduler.stop_worker(running)
                log.info("job cancel requested", job_id=job_id)
                break
            except IllegalTransition:
                continue
            except DiskFull:
                raise ResourceExhausted("the server's data disk is full: the cancel cannot be recorded now") from None
        return self.get(job_id)

    async def pause(self, job_id: str) -> JobRecord:
        """Pause a job: a queued one is PAUSED at once (no replica claims it until resumed); a running one
        goes PAUSING and its worker writes a checkpoint at its next step boundary and exits, freeing this
        replica for the next queued job; the job is then PAUSED, its state change naming the step it
        resumes from. Pausing a PAUSING or PAUSED job changes nothing; a terminal (or CANCELLING) job is
        refused: FailedPrecondition. The job as stored after the call."""
        for _ in range(3):  # another look if the job moved on while we decided (a claim, its end)
            job = self.get(job_id)
            if job.state in (JobState.PAUSING, JobState.PAUSED):
                return job
            if job.terminal or job.state == JobState.CANCELLING:
                raise FailedPrecondition(f"job {job_id} is {job.state.value}; only a queued or running job can "
                                         "be paused")
            running = self.scheduler.attempt_of(job_id)
            try:
                if job.state == JobState.QUEUED:
                    await self.transitions.set_state(job_id, JobState.PAUSED, message="paused while queued")
                else:  # RUNNING here or on another replica (whose heartbeat or notice sees PAUSING)
                    await self.transitions.set_state(job_id, JobState.PAUSING, message="pause requested: "
                                                     "saving a checkpoint at the next step")
                    if running is not None and not running.cancel_requested and not running.pause_requested:
                        running.pause_requested = True
                        if running.worker is not None:  # else _watch signals it once it has the job
                            self.scheduler.pause_worker(running)
                log.info("job pause requested", job_id=job_id, state=job.state.value)
                break
            except IllegalTransition:
                continue
            except DiskFull:
                raise ResourceExhausted("the server's data disk is full: the pause cannot be recorded now") from None
        return self.get(job_id)

    async def resume(self, job_id: str) -> JobRecord:
        """Resume a PAUSED job: QUEUED again, at the back of the queue (as a new job), to continue from the
        step it paused at (its newest complete checkpoint). A PAUSING job's pause is withdrawn (RUNNING
        again; once its worker has stopped at the checkpoint it is queued again, at the back). Resuming a
        queued or running job changes nothing; a terminal (or CANCELLING) job is refused:
        FailedPrecondition. The job as stored after the call."""
        for _ in range(3):
            job = self.get(job_id)
            if job.state in (JobState.QUEUED, JobState.RUNNING):
                return job
            if job.terminal or job.state == JobState.CANCELLING:
                raise FailedPrecondition(f"job {job_id} is {job.state.value}; only a paused job can be resumed")
            try:
                if job.state == JobState.PAUSED:
                    await self.transitions.set_state(job_id, JobState.QUEUED, message="resumed",
                                                     extra={"queue_seq": BACK_OF_QUEUE})
                    self.hub.open(job_id)
                    if self.scheduler.running is not None:
                        self.scheduler.warm_next()
                    self.scheduler.wake()
                else:  # PAUSING: the scheduler queues it again once the worker has stopped (conclude)
                    running = self.scheduler.attempt_of(job_id)
                    await self.transitions.set_state(job_id, JobState.RUNNING, message="resume requested while "
                                                     "pausing: it goes on (queued again if its worker had stopped)")
                    if running is not None and running.worker is None:  # not told to stop yet: it never will be
                        running.pause_requested = False
                log.info("job resume requested", job_id=job_id, state=job.state.value)
                break
            except IllegalTransition:
                continue
            except DiskFull:
                raise ResourceExhausted("the server's data disk is full: the resume cannot be recorded now") from None
        return self.get(job_id)

    async def event_batches(self, job_id: str, after_seq: int) -> AsyncIterator[list[Event]]:
        """A job's events after `after_seq`, as lists of what is pending (see EventHub.follow_batches)."""
        self.get(job_id)  # NOT_FOUND before the stream starts
        async for batch in self.hub.follow_batches(job_id, after_seq):
            yield batch

    # --- predict -------------------------------------------------------------------------------

    async def _model_dir(self, job_id: str) -> str:
        """The SUCCEEDED job's model folder on this replica (fetched from the shared artifact store if only
        another replica has it)."""
        job = self.get(job_id)
        if job.state != JobState.SUCCEEDED:
            raise FailedPrecondition(f"job {job_id} is {job.state.value}; only a SUCCEEDED job can predict")
        model_dir = self.settings.jobs_dir / job_id / MODEL_DIR
        if not await self.inference.fetch_model(job_id, model_dir):
            raise FailedPrecondition(f"job {job_id} has no finished model on disk")
        return str(model_dir)

    async def predict(self, job_id: str, request: dict) -> list[dict]:
        """request: {inputs: [str], conversations: [{messages: [...]}], generation: {...}}."""
        model_dir = await self._model_dir(job_id)
        n = len(request.get("inputs") or []) + len(request.get("conversations") or [])
        if n == 0:
            raise InvalidSpec(FieldViolation("inputs", "send at least one input"))
        if n > self.settings.max_predict_inputs:
            raise InvalidSpec(FieldViolation("inputs", f"at most {self.settings.max_predict_inputs} inputs per call"))
        return await self.inference.predict(model_dir, request)

    async def predict_stream(self, job_id: str, request: dict) -> AsyncIterator[dict]:
        """request: {text: str} or {conversation: {messages: [...]}}, plus generation. Yields
        {"text_delta": str} messages, then {"final": {...}}; closing the iterator stops the generation."""
        model_dir = await self._model_dir(job_id)
        if not request.get("text") and not request.get("conversation"):
            raise InvalidSpec(FieldViolation("text", "send a text or a conversation"))
        async for message in self.inference.predict_stream(model_dir, request):
            yield message
