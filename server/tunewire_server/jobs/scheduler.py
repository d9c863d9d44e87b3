"""The scheduler: claim → run → record → decide, one job at a time, in queue order.

The claim is a store operation (Store.claim_next); the only thing kept in memory is the one attempt this
process supervises (`Scheduler.running`), so that a cancel can reach its worker. Nothing one job does
ends the loop: a job whose end cannot be stored (a full disk) keeps its outcome in memory until the
store can write again.

Leases (one code path for every store): the claim holds the job's lease under this server's replica_id;
a heartbeat renews it every heartbeat_s (and looks whether another replica asked for a cancel); every
write of the running job carries it as `fence`. A renewal refused means another replica took the job
over: the worker is killed and nothing more is written for the job. With a shared store, a sweep every
heartbeat_s takes over the jobs whose lease expired (recovery.recover), and a stopping server hands its
job over (queued again under its own lease) instead of leaving it RUNNING.

Pause (JobManager.pause) reuses the shutdown's stop: the worker writes a checkpoint at its next step
boundary and exits; the attempt ends PAUSED (counted in the job's pauses, not as a failure), naming the
step of its newest complete checkpoint, and the loop takes the next queued job. A pause through another
replica reaches this one as a cancel does (the job went PAUSING: the heartbeat's or a notice's look).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from tunewire_server.checkpoints import latest_complete, step_of
from tunewire_server.config import Settings
from tunewire_server.jobs.outcome import RESUME, Outcome, decide, job_retry_limit
from tunewire_server.jobs.recorder import EventRecorder
from tunewire_server.jobs.recovery import recover
from tunewire_server.jobs.states import IllegalTransition, JobState
from tunewire_server.jobs.transitions import Transitions
from tunewire_server.layout import (
    CHECKPOINTS_DIR,
    MODEL_DIR,
    PARTIAL_MODEL_DIR,
    PLAN_FILE,
    WORKER_LOG,
    WORKER_PID,
)
from tunewire_server.observability import Metrics
from tunewire_server.protocol import (
    PROGRESS,
    CheckpointSaved,
    ErrorMessage,
    EvalResult,
    JobError,
    JobRequest,
    Message,
    Result,
    TrainLog,
    payload,
)
from tunewire_server.shared_store import S3_FIELDS
from tunewire_server.store import BACK_OF_QUEUE, DiskFull, JobRecord, Lease, LeaseLost, Store
from tunewire_server.workers.launcher import WorkerHandle
from tunewire_server.workers.pool import WarmPool
from tunewire_server.workers.process import CHECKPOINT_SIGNAL, STOP_SIGNAL, describe_exit

log = structlog.get_logger("tunewire.manager")

DISK_RETRY_S = (0.25, 5.0)  # first and longest pause between tries to write to a full disk
LOOP_END_S = 5.0  # on stop, the longest wait for the loop to record a stopped worker's last messages


def paused_step(job_dir: Path, key: bytes) -> int:
    """The step a paused job resumes from: its newest complete checkpoint's (0 if it has none)."""
    folder = latest_complete(job_dir / CHECKPOINTS_DIR, key)
    return (step_of(folder) or 0) if folder is not None else 0


@dataclass
class Attempt:
    """The attempt this process supervises: its job, its worker once it has one, whether it was cancelled."""

    job_id: str
    worker: WorkerHandle | None = None  # None while the worker is being taken or started
    cancel_requested: bool = False
    lease: Lease | None = None  # the job's lease this process holds: the fence of every write for it
    lease_lost: bool = False  # another replica took the job over: nothing more is written for it
    pause_requested: bool = False  # paused: its worker checkpoints and stops; the attempt ends PAUSED
    checkpoint_step: int | None = None  # the step of the newest checkpoint its worker saved (and marked)


def disk_full_error() -> JobError:
    """The error of a job stopped because the store could not record its progress (a full disk)."""
    return JobError.system("DISK_FULL", "the server's data disk filled up while the job ran: its progress could "
                                     "not be stored, so it was stopped")


class Scheduler:
    """Runs queued jobs one at a time on workers from `pool` until `shutdown()`."""

    def __init__(self, settings: Settings, store: Store, transitions: Transitions, pool: WarmPool,
                 metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.transitions = transitions
        self.pool = pool
        self.metrics = metrics
        self.running: Attempt | None = None
        self.stopping = False
        self.checkpoint_key = b""  # sent to each worker: it signs and verifies the job's checkpoints
        # told the id of each job whose SUCCEEDED state was just stored (retention: models/sweeper.py); it
        # must return at once (it starts its own task), so the next job is not held up
        self.on_succeeded: Callable[[str], None] | None = None
        self._wakeup = asyncio.Event()
        self._stopped = asyncio.Event()  # set by shutdown(): ends the pauses of a wait for disk space
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.Task | None = None
        self._probe: asyncio.Task | None = None
        self._sweep: asyncio.Task | None = None
        self._cancel_check: asyncio.Task | None = None

    def start(self) -> None:
        """Start the loop (`run`) as a task of the running event loop; with a shared store, also the sweep
        that takes over jobs whose lease expired."""
        self._loop = asyncio.create_task(self.run(), name="tunewire-scheduler")
        if self.store.shared:
            self._sweep = asyncio.create_task(self.sweep(), name="tunewire-lease-sweep")

    def serving(self) -> bool:
        """False once stopping or if the loop ended, and while the store cannot write (a full disk): then a
        probe (wait_writable) runs, so that the store finds out when it can write again."""
        if self.stopping or self._loop is None or self._loop.done():
            return False
        if not self.store.writable:
            if self._probe is None or self._probe.done():  # nothing else may write soon: find out
                self._probe = asyncio.create_task(self.wait_writable(), name="tunewire-store-probe")
            return False
        return True

    def wake(self) -> None:
        """Look at the queue again (a job was queued)."""
        self._wakeup.set()

    def warm_next(self) -> None:
        """Have the next job's worker started, unless the server is stopping."""
        if not self.stopping:
            self.pool.ensure_warm()

    # --- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run queued jobs one at a time, in queue order, until stopped. Nothing one job does ends it."""
        delay = DISK_RETRY_S[0]
        while not self.stopping:
            try:
                if self.store.shared:
                    # Claim only with a ready worker: a job claimed here would wait for this replica's worker
                    # to import torch while another replica, ready, stays idle.
                    await self.pool.wait_ready()
                self._wakeup.clear()  # before the claim: a job queued while it is under way sets it again
                job = await self.claim()
                if job is None:
                    await self._idle()
                    continue
                await self.supervise(job)
                delay = DISK_RETRY_S[0]
            except Exception:  # e.g. the store could not be read: pause, then look again
                log.exception("the scheduler's pass failed; trying again")
                await self.pause(delay)
                delay = min(delay * 2, DISK_RETRY_S[1])

    async def _idle(self) -> None:
        """Wait for a job to be queued: a wake(); with a shared store, at most event_poll_s (another replica
        may queue one, and its notice may be lost)."""
        if not self.store.shared:
            await self._wakeup.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), self.settings.event_poll_s)

    async def claim(self) -> JobRecord | None:
        """Take the next queued job from the store, RUNNING now under this replica's lease, and name it in
        `running`; None when nothing is queued, or when the disk was full (returned once the store can
        write again)."""
        try:
            return await self.transitions.claim(self._claimed, self.settings.replica_id, self.settings.lease_s)
        except DiskFull:
            log.warning("the disk is full: the next job waits until the store can write")
            await self.wait_writable()
            self._wakeup.set()  # look again
            return None

    def _claimed(self, job: JobRecord) -> None:
        """Called under the state lock with the job just claimed: a cancel now finds its attempt."""
        self.running = Attempt(job.id, lease=Lease(self.settings.replica_id, job.attempts))

    async def supervise(self, job: JobRecord) -> None:
        """Run one job and store how it ended (if the store cannot write that yet, keep it and retry),
        renewing its lease meanwhile; once the lease is lost, nothing more."""
        attempt = self.running
        assert attempt is not None
        heartbeat = asyncio.create_task(self._heartbeat(attempt), name=f"tunewire-heartbeat-{job.id}")
        try:
            try:
                outcome = await self._run(job)
            except Exception as exc:
                log.exception("job supervision failed", job_id=job.id)
                current = self.store.get_job(job.id)
                if current is None or current.terminal or attempt.lease_lost:
                    return
                outcome = Outcome(JobState.FAILED, "", error=disk_full_error() if isinstance(exc, DiskFull)
                                  else JobError.system("INTERNAL", "the server could not run this job"))
            if not attempt.lease_lost:
                await self.conclude(job.id, outcome, attempt.lease)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def conclude(self, job_id: str, outcome: Outcome, fence: Lease | None = None) -> None:
        """Store the outcome (fenced by the attempt's lease), trying again (with pauses) while the disk is
        full; on shutdown, the job stays RUNNING and the next start resolves it (a shared store: it is
        handed over). A cancel that came as it ended turns it into CANCELLED. A lost lease ends it all."""
        delay = DISK_RETRY_S[0]
        while True:
            try:
                await self._apply(job_id, outcome, fence)
                if outcome.state == JobState.SUCCEEDED and self.on_succeeded is not None:
                    try:
                        self.on_succeeded(job_id)
                    except Exception:  # the job's end is stored: nothing after it may undo that
                        log.exception("the after-success hook failed", job_id=job_id)
                return
            except LeaseLost:
                log.warning("the job's lease was taken over: its end is not stored here", job_id=job_id,
                            state=outcome.state.value)
                return
            except DiskFull:
                if self.stopping:
                    log.warning("the job's end could not be stored before the server stopped", job_id=job_id)
                    return
                if delay == DISK_RETRY_S[0]:
                    log.warning("the disk is full: the job's end is kept until it can be stored", job_id=job_id,
                                state=outcome.state.value)
                await self.pause(delay)
                delay = min(delay * 2, DISK_RETRY_S[1])
            except IllegalTransition:
                current = self.store.get_job(job_id)
                if current is None or current.terminal:
                    return
                if outcome.state == JobState.PAUSED and current.state == JobState.RUNNING:
                    # resumed before the pause ended (PAUSING -> RUNNING): queued again instead of PAUSED
                    outcome = Outcome(JobState.QUEUED, f"resumed while pausing; continues from step {outcome.step}",
                                      pause=True, step=outcome.step)
                    continue
                if current.state != JobState.CANCELLING:
                    raise
                outcome = Outcome(JobState.CANCELLED, "cancelled")

    async def _apply(self, job_id: str, outcome: Outcome, fence: Lease | None = None) -> None:
        """Record one outcome: RESUME changes nothing (a shared store: the job is queued again at its place,
        for another replica to resume at once), QUEUED goes to the back of the queue, the rest ends it."""
        if outcome.state == RESUME and self.store.shared and fence is not None:
            await self.transitions.set_state(job_id, JobState.QUEUED, fence=fence, message=(
                f"handed over: replica {fence.owner} stopped; resuming from the last complete checkpoint"))
            log.info("job handed over", job_id=job_id)
        elif outcome.state == RESUME:
            log.info(outcome.message, job_id=job_id)
        elif outcome.state == JobState.PAUSED:
            await self.transitions.set_state(job_id, JobState.PAUSED, message=outcome.message, fence=fence,
                                             extra=self._pause_counted(job_id), details={"step": outcome.step})
            log.info("job paused", job_id=job_id, step=outcome.step)
        elif outcome.state == JobState.QUEUED and not outcome.pause and self._pausing(job_id):
            # paused as the attempt failed (after its worker exited): PAUSED, the failure still counted
            await self.transitions.set_state(job_id, JobState.PAUSED, message=f"paused; {outcome.message}",
                                             error=outcome.error, fence=fence)
        elif outcome.state == JobState.QUEUED:  # a retry waits behind every job queued before it
            extra = {"queue_seq": BACK_OF_QUEUE, **(self._pause_counted(job_id) if outcome.pause else {})}
            await self.transitions.set_state(job_id, JobState.QUEUED, message=outcome.message, error=outcome.error,
                                             extra=extra, fence=fence)
            self._wakeup.set()
        else:  # the job's end (SUCCEEDED included: hooks on a success go after this)
            await self.transitions.finish(job_id, outcome.state, message=outcome.message, error=outcome.error,
                                          metrics=outcome.metrics, fence=fence)

    def _pausing(self, job_id: str) -> bool:
        job = self.store.get_job(job_id)
        return job is not None and job.state == JobState.PAUSING

    def _pause_counted(self, job_id: str) -> dict:
        """The job fields that count one more attempt ended by a pause (only the lease's holder writes them)."""
        job = self.store.get_job(job_id)
        return {"pauses": (job.pauses if job is not None else 0) + 1}

    # --- one attempt ---------------------------------------------------------------------------

    async def _run(self, job: JobRecord) -> Outcome:
        """Run the attempt `job` was claimed for (it is RUNNING, `running` names it) on a ready worker, and
        return how it ended. Whatever happens, `running` is cleared and the worker does not outlive it."""
        job_dir = self.settings.jobs_dir / job.id
        running = self.running
        assert running is not None and running.job_id == job.id
        try:
            plan = job.plan  # a job queued before plans were stored with it has its plan.json
            if plan is None:
                plan = json.loads((job_dir / PLAN_FILE).read_text())
            worker = running.worker = await self.pool.take(job_dir / WORKER_LOG)
        except BaseException:
            self.running = None
            raise
        try:
            if self.store.count_in_states([JobState.QUEUED]):
                self.warm_next()  # the next job is already waiting
            return await self._watch(job, job_dir, plan, running, worker)
        except BaseException:
            worker.kill()  # supervision failed (or the server stops): the worker belongs to no job now
            raise
        finally:
            self.running = None
            if not running.lease_lost:  # else the folder is another replica's now, its worker.pid too
                with contextlib.suppress(OSError):
                    (job_dir / WORKER_PID).unlink(missing_ok=True)
            self.warm_next()
            log.debug("attempt ended", job_id=job.id, attempt=job.attempts)

    async def _watch(self, job: JobRecord, job_dir: Path, plan: dict, running: Attempt,
                     worker: WorkerHandle) -> Outcome:
        """Hand the job to its worker, store its progress as it comes, and decide how the attempt ended."""
        bound = log.bind(job_id=job.id)
        try:
            (job_dir / WORKER_PID).write_text(str(worker.pid))
        except OSError as exc:  # only a killed server's next start needs it (to end an orphan)
            bound.warning("could not write worker.pid", error=str(exc))
        bound.info("worker assigned", pid=worker.pid, attempt=job.attempts)
        try:
            await worker.send(JobRequest(
                job.id, json.loads(job.spec_json), plan, str(job_dir), str(job_dir / WORKER_LOG),
                self.checkpoint_key.hex(), nan_loss_steps=self.settings.nan_loss_steps,
                train_processes=self.settings.train_processes, artifacts=self.settings.artifacts,
                **{name: getattr(self.settings, name) for name in S3_FIELDS}))
        except ConnectionError:  # it died after `ready`: its exit code tells the outcome below
            bound.warning("the worker was gone before it got its job")
        if running.lease_lost:  # taken over while the worker was being readied
            worker.kill()
        elif running.cancel_requested:  # cancelled while the worker was being readied
            self.stop_worker(running)
        elif running.pause_requested:  # paused while the worker was being readied
            self.pause_worker(running)
        elif self.stopping:
            worker.signal(CHECKPOINT_SIGNAL)

        def storing_failed(exc: Exception) -> None:
            if isinstance(exc, LeaseLost):
                self._lease_lost(running)
                return
            if isinstance(exc, DiskFull):
                bound.warning("the disk is full: the job's progress cannot be stored; stopping its worker")
            else:
                bound.error("the job's progress could not be stored; stopping its worker", exc_info=exc)
            self.stop_worker(running)

        result: Result | None = None
        error: JobError | None = None
        recorder = EventRecorder(functools.partial(self._record, job.id, running.lease), storing_failed)
        try:
            async for message in worker.messages():
                if isinstance(message, Result):
                    result = message
                elif isinstance(message, ErrorMessage):
                    error = message.error
                elif isinstance(message, PROGRESS):
                    if isinstance(message, CheckpointSaved):
                        running.checkpoint_step = message.step
                    recorder.add(message)
        finally:
            await recorder.close()
        code = await worker.wait()
        bound.info("worker exited", code=code)
        if running.lease_lost:
            return Outcome(RESUME, "the lease was lost: another replica runs the job")
        recording_error = None
        if recorder.failure is not None:
            recording_error = (disk_full_error() if isinstance(recorder.failure, DiskFull)
                               else JobError.system("INTERNAL", "the server could not store the job's progress"))
        outcome = decide(exit_code=code, exit_description=describe_exit(code), result=result,
                         model_saved=(job_dir / MODEL_DIR).is_dir(), error=error,
                         cancel_requested=running.cancel_requested, stopping=self.stopping,
                         recording_error=recording_error, attempt=job.attempts - job.pauses,
                         max_retries=job_retry_limit(job.spec_json, self.settings.max_job_retries),
                         pause_requested=running.pause_requested)
        if outcome.state == JobState.CANCELLED:
            shutil.rmtree(job_dir / PARTIAL_MODEL_DIR, ignore_errors=True)
        if outcome.state == JobState.PAUSED:
            step = running.checkpoint_step
            if step is None:  # none saved by this attempt: the one an earlier attempt left, if any
                step = await asyncio.to_thread(paused_step, job_dir, self.checkpoint_key)
            outcome = Outcome(JobState.PAUSED, outcome.message.replace("paused", f"paused at step {step}", 1),
                              pause=True, step=step)
        return outcome

    async def _record(self, job_id: str, fence: Lease | None, messages: list[Message]) -> None:
        """Store a worker's progress messages as events (one transaction, fenced by the attempt's lease),
        then publish them. A train log sets the job's progress, an evaluation its metrics (the finite ones)."""
        items = []
        for message in messages:
            fields: dict = {}
            if isinstance(message, TrainLog):
                self.metrics.train_log(message)
                fields["progress"] = message.progress
            elif isinstance(message, EvalResult):
                fields["metrics"] = {k: v for k, v in message.metrics.items()
                                     if isinstance(v, (int, float)) and math.isfinite(v)}
            items.append((message.KIND, payload(message), fields, message.time))
        for event in await self.store.write(self.store.append_events, job_id, items, fence=fence):
            await self.transitions.hub.publish(event)

    # --- leases --------------------------------------------------------------------------------

    async def _heartbeat(self, attempt: Attempt) -> None:
        """Renew the attempt's lease every heartbeat_s until cancelled; a refusal means it was taken over.
        Each beat also looks whether the job went CANCELLING (a cancel through another replica)."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                held = await self.store.write(self.store.renew_lease, attempt.lease, attempt.job_id,
                                              self.settings.lease_s)
            except Exception as exc:  # the store is out of reach: the lease may run out; the next beat tells
                log.warning("could not renew the job's lease", job_id=attempt.job_id, error=str(exc)[:200])
                continue
            if not held:
                self._lease_lost(attempt)
                return
            await self._check_cancel(attempt)

    def _lease_lost(self, attempt: Attempt) -> None:
        """Another replica took the job over: kill its worker here (it must not write a checkpoint into
        the job's folder any more) and write nothing more for the job."""
        if attempt.lease_lost:
            return
        attempt.lease_lost = True
        log.warning("the job's lease was lost (another replica took it over); killing its worker",
                    job_id=attempt.job_id)
        if attempt.worker is not None:
            attempt.worker.kill()

    def notice(self, job_id: str) -> None:
        """Another write for `job_id` was stored (a Notice): if this process runs the job, look whether it
        was a cancel (or a pause) through another replica (one look at a time)."""
        attempt = self.attempt_of(job_id)
        if attempt is None or attempt.cancel_requested or not self.store.shared:
            return
        if self._cancel_check is None or self._cancel_check.done():
            self._cancel_check = asyncio.create_task(self._check_cancel(attempt))

    async def _check_cancel(self, attempt: Attempt) -> None:
        """If the job went CANCELLING (or PAUSING) while this process runs it, stop its worker as a local
        cancel (or pause) would."""
        try:
            job = await asyncio.to_thread(self.store.get_job, attempt.job_id)
        except Exception as exc:
            log.warning("could not read the running job", job_id=attempt.job_id, error=str(exc)[:200])
            return
        if (job is not None and job.state == JobState.CANCELLING and not attempt.cancel_requested
                and self.running is attempt):
            log.info("job cancel requested through another replica", job_id=attempt.job_id)
            attempt.cancel_requested = True
            if attempt.worker is not None:
                self.stop_worker(attempt)
        elif (job is not None and job.state == JobState.PAUSING and not attempt.pause_requested
              and not attempt.cancel_requested and self.running is attempt):
            log.info("job pause requested through another replica", job_id=attempt.job_id)
            attempt.pause_requested = True
            if attempt.worker is not None:
                self.pause_worker(attempt)

    async def sweep(self) -> None:
        """Every heartbeat_s, take over the jobs whose lease expired (their replica died), until stopped."""
        while not self.stopping:
            await self.pause(self.settings.heartbeat_s)
            if self.stopping:
                return
            try:
                if await recover(self.transitions, self.settings.jobs_dir, self.settings.max_job_retries):
                    self.wake()
            except Exception:
                log.exception("the lease sweep failed; trying again")

    # --- cancel and shutdown -------------------------------------------------------------------

    def attempt_of(self, job_id: str) -> Attempt | None:
        """The attempt this process runs for `job_id`, if any."""
        return self.running if self.running is not None and self.running.job_id == job_id else None

    def stop_worker(self, attempt: Attempt) -> None:
        """Ask the attempt's worker to stop at its next step; kill it if it has not exited after cancel_grace_s."""
        assert attempt.worker is not None
        attempt.worker.signal(STOP_SIGNAL)
        self._kill_after(attempt, self.settings.cancel_grace_s, "cancel")

    def pause_worker(self, attempt: Attempt) -> None:
        """Ask the attempt's worker to save a checkpoint at its next step and stop (as on shutdown); kill it
        if it has not exited after shutdown_grace_s (the job then resumes from its checkpoint before)."""
        assert attempt.worker is not None
        attempt.worker.signal(CHECKPOINT_SIGNAL)
        self._kill_after(attempt, self.settings.shutdown_grace_s, "pause")

    def _kill_after(self, attempt: Attempt, grace_s: float, what: str) -> None:
        task = asyncio.create_task(self._kill_after_grace(attempt, grace_s, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _kill_after_grace(self, attempt: Attempt, grace_s: float, what: str) -> None:
        """Kill the attempt's worker if it outlives the grace of a cancel (or pause)."""
        try:
            await asyncio.wait_for(asyncio.shield(attempt.worker.wait()), grace_s)
        except TimeoutError:
            log.warning(f"worker ignored {what}; killing it", job_id=attempt.job_id)
            attempt.worker.kill()

    async def shutdown(self) -> bool:
        """Take no more jobs; the running worker saves a checkpoint and stops (killed after
        shutdown_grace_s), and its job stays RUNNING for the next start to resume (a shared store: the loop
        queues it again under its lease, for another replica to resume at once). Whether a worker ran."""
        self.stopping = True
        self.pool.stop_warming()
        self._stopped.set()
        self._wakeup.set()
        running = self.running
        if running is not None and running.worker is not None:
            running.worker.signal(CHECKPOINT_SIGNAL)
            try:
                await asyncio.wait_for(asyncio.shield(running.worker.wait()), self.settings.shutdown_grace_s)
            except TimeoutError:
                log.warning("worker did not checkpoint in time; killing it", job_id=running.job_id)
                running.worker.kill()
            return True
        return False

    async def stop(self) -> None:
        """shutdown(); then let the loop record what the stopped worker sent last (for at most LOOP_END_S),
        end the loop and the store probe, and kill a worker that was still starting."""
        if await self.shutdown() and self._loop is not None:
            await asyncio.wait([self._loop], timeout=LOOP_END_S)
        for task in (self._loop, self._probe, self._sweep, self._cancel_check):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                except Exception:  # it ended with an error before: say so, and go on stopping
                    log.exception("a background task had failed", task=task.get_name())
        if self.running is not None and self.running.worker is not None:
            self.running.worker.kill()

    # --- a full disk ---------------------------------------------------------------------------

    async def wait_writable(self) -> None:
        """Return once a small write to the store succeeds (at once if it does), or the server stops."""
        delay = DISK_RETRY_S[0]
        while not self.stopping:
            try:
                await self.store.write(self.store.probe)
                return
            except DiskFull:
                await self.pause(delay)
                delay = min(delay * 2, DISK_RETRY_S[1])

    async def pause(self, seconds: float) -> None:
        """Sleep, but no longer than until shutdown()."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)
