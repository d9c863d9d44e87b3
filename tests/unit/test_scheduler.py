"""The scheduler (jobs/scheduler.py) and the outcomes it records, driven through JobManager with a fake
training launcher: scripted workers, a real SQLite store, no torch, no gRPC, no processes.

Jobs are put in the store directly (the plan is opaque to the scheduler); each test asserts the job's
state sequence as the store's events tell it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tunewire_server import protocol
from tunewire_server.config import Settings
from tunewire_server.jobs.manager import JobManager
from tunewire_server.jobs.outcome import Outcome
from tunewire_server.jobs.recovery import RESTART_ALLOWANCE
from tunewire_server.jobs.states import JobState
from tunewire_server.layout import MODEL_DIR
from tunewire_server.protocol import CheckpointSaved, JobError, JobRequest, Message
from tunewire_server.store import SQLiteStore
from tunewire_server.workers.process import CHECKPOINT_SIGNAL, STOP_SIGNAL

# --- the fake worker -------------------------------------------------------------------------------


@dataclass
class Send:
    """Send one message: kind and payload, as the worker's MessageWriter would."""

    kind: str
    payload: dict = field(default_factory=dict)


@dataclass
class Exit:
    """Close the pipe and exit with `code` (negative: killed by that signal)."""

    code: int


@dataclass
class Gate:
    """Wait until the test opens `event` (e.g. to hold a worker while it starts)."""

    event: asyncio.Event


READY = Send("ready")
REQUEST = "request"  # wait for the job request
MODEL = "model"  # write the finished model folder into the job's folder
BLOCK = "block"  # train until a signal comes (STOP: exit 0, no result; CHECKPOINT: save one, exit 0)
DIE_ON_REQUEST = "die-on-request"  # exit (SIGKILL) as the request is written: the write fails

TRAINING = [Send("train_log", {"step": 1, "max_steps": 2, "epoch": 0.5, "progress": 0.5, "loss": 0.5}),
            Send("checkpoint_saved", {"step": 1, "name": "checkpoint-1"}),
            Send("eval_result", {"step": 1, "epoch": 0.5, "metrics": {"loss": 0.25, "nan": float("nan")}})]
SUCCESS = [READY, REQUEST, *TRAINING, MODEL, Send("result", {"metrics": {"eval_loss": 0.25}}), Exit(0)]
LONG = [READY, REQUEST, Send("train_log", {"step": 1, "max_steps": 10, "epoch": 0.1, "progress": 0.1}), BLOCK]


def error(kind: str, code: str = "X") -> Send:
    return Send("error", {"error": {"code": code, "kind": kind, "field": "", "message": f"{code} happened"}})


class FakeWorker:
    """Plays a script: the messages a training worker sends, its exit, and what it does on a signal."""

    def __init__(self, pid: int, script: list) -> None:
        self.failure: BaseException | None = None  # the script's own error (a broken test)
        self.pid = pid
        self.requests: list[JobRequest] = []
        self.signals: list[int] = []
        self._script = list(script)
        self._out: asyncio.Queue = asyncio.Queue()
        self._request = asyncio.Event()
        self._signalled = asyncio.Event()
        self._exit: asyncio.Future = asyncio.get_running_loop().create_future()
        self._die_on_request = DIE_ON_REQUEST in script
        self._task = asyncio.create_task(self._play())

    async def _play(self) -> None:
        try:
            await self._steps()
        except Exception as exc:
            self.failure = exc
            raise
        self._end(0)

    async def _steps(self) -> None:
        for step in self._script:
            if isinstance(step, Send):
                if step.kind == "result" and self.signals:
                    break  # a stopped worker sends no result
                self._out.put_nowait(protocol.KINDS[step.kind].from_fields({**step.payload, "time": 1.0}))
            elif isinstance(step, Exit):
                self._end(step.code)
                return
            elif isinstance(step, Gate):
                await step.event.wait()
            elif step == REQUEST:
                await self._request.wait()
            elif step == DIE_ON_REQUEST:
                await asyncio.Event().wait()  # send() ends it
            elif step == MODEL:
                (Path(self.requests[0].job_dir) / MODEL_DIR).mkdir()
            elif step == BLOCK:
                await self._signalled.wait()
                if self.signals[0] == CHECKPOINT_SIGNAL:
                    self._out.put_nowait(CheckpointSaved(2, "checkpoint-2", time=2.0))
                break
            await asyncio.sleep(0)

    def _end(self, code: int) -> None:
        if not self._exit.done():
            self._exit.set_result(code)
            self._out.put_nowait(None)  # the pipe closes

    # --- WorkerHandle ---

    async def send(self, request: JobRequest) -> None:
        if self._exit.done() or self._die_on_request:
            self._task.cancel()
            self._end(-9)
            raise BrokenPipeError("the worker is gone")
        self.requests.append(request)
        self._request.set()

    async def receive(self) -> Message | None:
        if self._exit.done() and self._out.empty():
            return None
        return await self._out.get()

    async def messages(self):
        while (message := await self.receive()) is not None:
            yield message

    def signal(self, sig: int) -> None:
        if not self._exit.done():
            self.signals.append(sig)
            self._signalled.set()

    def kill(self) -> None:
        if not self._exit.done():
            self._task.cancel()
            self._end(-9)

    async def wait(self) -> int:
        return await self._exit

    async def close(self, grace_s: float = 5.0) -> None:
        self._task.cancel()
        self._end(0)  # no job came: it exits on its closed stdin


class FakeLauncher:
    """Starts FakeWorkers, each playing the next script given (then `default`)."""

    def __init__(self, *scripts: list, default: list = SUCCESS) -> None:
        self.scripts = list(scripts)
        self.default = default
        self.workers: list[FakeWorker] = []

    async def start(self, log_path: Path) -> FakeWorker:
        worker = FakeWorker(1000 + len(self.workers), self.scripts.pop(0) if self.scripts else self.default)
        self.workers.append(worker)
        return worker

    def ran(self) -> list[str]:
        """The job ids the workers got, in order."""
        return [request.job_id for worker in self.workers for request in worker.requests]


# --- helpers ---------------------------------------------------------------------------------------


class Store(SQLiteStore):
    """The real SQLite store, which remembers its path: queue() makes a job's folder beside it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.path = path


def settings(tmp_path: Path, **overrides) -> Settings:
    values = dict(data_dir=tmp_path / "data", metrics_port=-1, warm_worker=False, max_job_retries=3,
                  cancel_grace_s=5, shutdown_grace_s=5)
    return Settings(**{**values, **overrides})


def queue(store: Store, job_id: str, max_retries: int = 0) -> None:
    """Store a QUEUED job as submit() would (its folder beside the database), with an empty plan."""
    (store.path.parent / "jobs" / job_id).mkdir(parents=True)
    spec = json.dumps({"base_model": "m", "max_retries": max_retries})
    store.create_job(job_id, spec, None, ("state_change", {"state": "QUEUED", "message": "queued"}), "{}")


def states(store: Store, job_id: str) -> list[str]:
    return [e.payload["state"] for e in store.events_after(job_id, 0) if e.kind == "state_change"]


async def until(condition, timeout: float = 10) -> None:
    """Wait (yielding to the loop) until condition() is true; the timeout only guards a hang."""
    async def poll():
        while not condition():
            await asyncio.sleep(0.001)
    await asyncio.wait_for(poll(), timeout)


def ended(store: Store, *job_ids: str):
    return lambda: all(store.get_job(j).terminal for j in job_ids)


@pytest.fixture
def run(tmp_path):
    """run(body, launcher, **settings): body(manager, store) inside a started manager, stopped after."""
    def go(body, launcher: FakeLauncher, before=None, **overrides):
        async def main():
            s = settings(tmp_path, **overrides)
            store = Store(s.db_path)
            try:
                if before is not None:
                    before(store)
                manager = JobManager(s, store, launcher=launcher)
                await manager.start()
                try:
                    await body(manager, store)
                finally:
                    await manager.stop()
                assert [w.failure for w in launcher.workers if w.failure] == []  # the scripts themselves ran
            finally:
                store.close()
        asyncio.run(main())
    return go


# --- order -----------------------------------------------------------------------------------------


def test_jobs_run_one_at_a_time_in_the_order_they_were_queued(run):
    launcher = FakeLauncher()

    async def body(manager, store):
        await until(ended(store, "job-a", "job-b", "job-c"))
        assert launcher.ran() == ["job-a", "job-b", "job-c"]
        for job_id in ("job-a", "job-b", "job-c"):
            assert states(store, job_id) == ["QUEUED", "RUNNING", "SUCCEEDED"]
        done = store.get_job("job-a")
        assert (done.progress, done.metrics, done.error) == (1.0, {"eval_loss": 0.25}, None)
        kinds = [e.kind for e in store.events_after("job-a", 0)]
        assert kinds == ["state_change", "state_change", "train_log", "checkpoint_saved", "eval_result",
                         "state_change"]
        evaluation = store.events_after("job-a", 0)[4]
        assert evaluation.payload == {"step": 1, "epoch": 0.5, "metrics": {"loss": 0.25, "nan": "nan"}}
        assert evaluation.time == 1.0  # when the worker said it happened

    run(body, launcher, before=lambda store: [queue(store, j) for j in ("job-a", "job-b", "job-c")])


def test_the_request_carries_the_job_its_plan_and_folder(run, tmp_path):
    launcher = FakeLauncher()

    async def body(manager, store):
        await until(ended(store, "job-a"))
        request = launcher.workers[0].requests[0]
        job_dir = tmp_path / "data" / "jobs" / "job-a"
        assert request.job_id == "job-a" and request.spec["base_model"] == "m"
        assert request.plan == {} and request.job_dir == str(job_dir)
        assert request.log_path == str(job_dir / "worker.log")
        assert bytes.fromhex(request.checkpoint_key) == manager.scheduler.checkpoint_key != b""
        assert request.nan_loss_steps == manager.settings.nan_loss_steps
        assert not (job_dir / "worker.pid").exists()  # removed when the attempt ended

    run(body, launcher, before=lambda store: queue(store, "job-a"))


def test_a_warm_worker_takes_the_first_job_and_the_next_is_warmed_while_one_waits(run):
    launcher = FakeLauncher(LONG)

    async def body(manager, store):
        await until(lambda: launcher.workers and launcher.workers[0].requests)
        assert len(launcher.workers) == 1  # started at start-up, no second one beside a lone job
        queue(store, "job-b")
        manager.scheduler.warm_next()  # as submit() does for a job queued behind a running one
        await until(lambda: len(launcher.workers) == 2)
        await manager.cancel("job-a")
        await until(ended(store, "job-a", "job-b"))
        assert launcher.ran() == ["job-a", "job-b"]
        assert states(store, "job-b") == ["QUEUED", "RUNNING", "SUCCEEDED"]

    run(body, launcher, before=lambda store: queue(store, "job-a"), warm_worker=True)


# --- cancel ----------------------------------------------------------------------------------------


def test_cancel_while_queued_and_while_running(run):
    launcher = FakeLauncher(LONG)

    async def body(manager, store):
        await until(lambda: launcher.workers and launcher.workers[0].requests)
        assert (await manager.cancel("job-b")).state == JobState.CANCELLED
        assert (await manager.cancel("job-a")).state == JobState.CANCELLING
        await until(ended(store, "job-a"))
        assert launcher.workers[0].signals == [STOP_SIGNAL]
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "CANCELLING", "CANCELLED"]
        assert states(store, "job-b") == ["QUEUED", "CANCELLED"]
        assert launcher.ran() == ["job-a"]

    run(body, launcher, before=lambda store: [queue(store, j) for j in ("job-a", "job-b")])


def test_cancel_while_the_worker_is_being_started_stops_it_once_it_has_the_job(run):
    gate = asyncio.Event()
    launcher = FakeLauncher([Gate(gate), *LONG])

    async def body(manager, store):
        await until(lambda: launcher.workers)
        assert manager.scheduler.running.worker is None  # still starting
        assert (await manager.cancel("job-a")).state == JobState.CANCELLING
        gate.set()
        await until(ended(store, "job-a"))
        assert launcher.workers[0].signals == [STOP_SIGNAL]
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "CANCELLING", "CANCELLED"]

    run(body, launcher, before=lambda store: queue(store, "job-a"))


def test_cancel_after_the_job_ended_changes_nothing(run):
    async def body(manager, store):
        await until(ended(store, "job-a"))
        assert (await manager.cancel("job-a")).state == JobState.SUCCEEDED
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "SUCCEEDED"]

    run(body, FakeLauncher(), before=lambda store: queue(store, "job-a"))


def test_a_cancel_between_the_workers_exit_and_the_recorded_outcome_is_not_lost(tmp_path):
    """The job is RUNNING in the store but no worker of this server runs it any more (its outcome waits
    to be stored, e.g. on a full disk): the cancel takes, and an outcome that would retry it ends it
    CANCELLED instead. (Moved from test_manager_cancel.py.)"""
    async def main():
        s = settings(tmp_path)
        store = Store(s.db_path)
        manager = JobManager(s, store, launcher=FakeLauncher())
        queue(store, "job-a")
        job, _ = store.claim_next()  # RUNNING, and no attempt names it: the worker has exited
        assert job.state == JobState.RUNNING and manager.scheduler.running is None

        assert (await manager.cancel("job-a")).state == JobState.CANCELLING
        await manager.scheduler.conclude("job-a", Outcome(JobState.QUEUED, "retrying",
                                                          error=JobError.system("X", "crashed")))
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "CANCELLING", "CANCELLED"]
        store.close()

    asyncio.run(main())


# --- errors and retries ----------------------------------------------------------------------------


def test_a_system_error_is_retried_behind_the_queue_until_the_retries_are_spent(run):
    failing = [READY, REQUEST, *TRAINING, error("SYSTEM", "CUDA_OOM"), Exit(1)]
    launcher = FakeLauncher(failing, SUCCESS, failing)

    async def body(manager, store):
        await until(ended(store, "job-a", "job-b"))
        assert launcher.ran() == ["job-a", "job-b", "job-a"]  # the retry waited behind job-b
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "QUEUED", "RUNNING", "FAILED"]
        job = store.get_job("job-a")
        assert (job.attempts, job.error["code"], job.error["kind"]) == (2, "CUDA_OOM", "SYSTEM")

    run(body, launcher, before=lambda store: (queue(store, "job-a", max_retries=1), queue(store, "job-b")))


def test_retries_are_capped_by_the_servers_setting(run):
    failing = [READY, REQUEST, error("SYSTEM"), Exit(1)]

    async def body(manager, store):
        await until(ended(store, "job-a"))
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "QUEUED", "RUNNING", "FAILED"]

    run(body, FakeLauncher(failing, failing, failing), before=lambda store: queue(store, "job-a", max_retries=5),
        max_job_retries=1)


def test_a_user_error_is_not_retried(run):
    launcher = FakeLauncher([READY, REQUEST, error("USER", "BAD_DATA"), Exit(1)])

    async def body(manager, store):
        await until(ended(store, "job-a"))
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "FAILED"]
        assert store.get_job("job-a").error["code"] == "BAD_DATA"
        assert len(launcher.workers) == 1

    run(body, launcher, before=lambda store: queue(store, "job-a", max_retries=2))


def test_success_after_a_retry_clears_the_earlier_error(run):
    async def body(manager, store):
        await until(ended(store, "job-a"))
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "QUEUED", "RUNNING", "SUCCEEDED"]
        assert store.get_job("job-a").error is None

    run(body, FakeLauncher([READY, REQUEST, error("SYSTEM"), Exit(1)]),
        before=lambda store: queue(store, "job-a", max_retries=1))


# --- a worker that dies ----------------------------------------------------------------------------


def test_a_worker_that_dies_before_ready_is_replaced_once(run):
    launcher = FakeLauncher([Exit(1)])

    async def body(manager, store):
        await until(ended(store, "job-a"))
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "SUCCEEDED"]
        assert len(launcher.workers) == 2

    run(body, launcher, before=lambda store: queue(store, "job-a"))


def test_workers_that_keep_dying_before_ready_fail_the_job(run):
    launcher = FakeLauncher([Exit(1)], [Exit(-9)], [READY, REQUEST, Exit(0)])

    async def body(manager, store):
        await until(ended(store, "job-a"))
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "FAILED"]
        assert store.get_job("job-a").error["code"] == "INTERNAL"
        assert launcher.ran() == []

    run(body, launcher, before=lambda store: queue(store, "job-a", max_retries=1))


def test_a_worker_that_dies_after_ready_before_its_request_is_a_crash_retried(run):
    launcher = FakeLauncher([READY, DIE_ON_REQUEST])

    async def body(manager, store):
        await until(ended(store, "job-a"))
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "QUEUED", "RUNNING", "SUCCEEDED"]
        retry = [e for e in store.events_after("job-a", 0) if e.kind == "state_change"][2]
        assert retry.payload["error"]["code"] == "WORKER_CRASHED"

    run(body, launcher, before=lambda store: queue(store, "job-a", max_retries=1))


def test_a_worker_killed_mid_training_is_retried_then_fails(run):
    crash = [READY, REQUEST, *TRAINING, Exit(-9)]

    async def body(manager, store):
        await until(ended(store, "job-a"))
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "QUEUED", "RUNNING", "FAILED"]
        job = store.get_job("job-a")
        assert job.error["code"] == "WORKER_CRASHED" and "SIGKILL" in job.error["message"]
        assert [e.kind for e in store.events_after("job-a", 0)].count("train_log") == 2  # both attempts'

    run(body, FakeLauncher(crash, crash), before=lambda store: queue(store, "job-a", max_retries=1))


def test_a_result_without_the_saved_model_is_not_a_success(run):
    async def body(manager, store):
        await until(ended(store, "job-a"))
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "FAILED"]
        assert store.get_job("job-a").error["code"] == "WORKER_CRASHED"

    run(body, FakeLauncher([READY, REQUEST, Send("result", {"metrics": {}}), Exit(0)]),
        before=lambda store: queue(store, "job-a"))


# --- shutdown and restarts -------------------------------------------------------------------------


def test_stop_checkpoints_the_running_job_and_leaves_it_running_for_the_next_start(run):
    launcher = FakeLauncher(LONG)

    async def body(manager, store):
        await until(lambda: launcher.workers and launcher.workers[0].requests)
        await manager.stop()
        assert launcher.workers[0].signals == [CHECKPOINT_SIGNAL]
        assert states(store, "job-a") == ["QUEUED", "RUNNING"]
        assert [e.kind for e in store.events_after("job-a", 0)][-1] == "checkpoint_saved"
        assert launcher.ran() == ["job-a"]  # job-b waits for the next start

    run(body, launcher, before=lambda store: (queue(store, "job-a"), queue(store, "job-b")))


def test_stop_while_the_worker_starts_kills_it_and_leaves_the_job_running(run):
    launcher = FakeLauncher([Gate(asyncio.Event()), *LONG])  # never ready

    async def body(manager, store):
        await until(lambda: launcher.workers)
        await manager.stop()
        assert await asyncio.wait_for(launcher.workers[0].wait(), 10) == -9  # killed, not left behind
        assert states(store, "job-a") == ["QUEUED", "RUNNING"]
        assert launcher.ran() == []

    run(body, launcher, before=lambda store: queue(store, "job-a"))


def test_jobs_left_running_by_a_previous_server_resume_until_the_restart_allowance_is_spent(tmp_path):
    async def life(s: Settings, launcher: FakeLauncher) -> None:
        """One server process: start, run job-a until it trains, stop."""
        store = Store(s.db_path)
        manager = JobManager(s, store, launcher=launcher)
        await manager.start()
        if store.get_job("job-a").state != JobState.FAILED:
            await until(lambda: launcher.workers and launcher.workers[-1].requests)
        await manager.stop()
        store.close()

    async def main():
        s = settings(tmp_path)
        store = Store(s.db_path)
        queue(store, "job-a")  # max_retries 0: 1 attempt + RESTART_ALLOWANCE restarts
        store.close()
        lives = 1 + RESTART_ALLOWANCE + 1  # attempts; the next start finds one more than allowed
        for _ in range(lives + 1):
            await life(s, FakeLauncher(LONG))
        store = Store(s.db_path)
        assert states(store, "job-a") == ["QUEUED", "RUNNING"] + ["QUEUED", "RUNNING"] * (lives - 1) + ["FAILED"]
        assert store.get_job("job-a").error["code"] == "SERVER_RESTARTED"
        store.close()

    asyncio.run(main())


def test_a_job_cancelled_while_the_server_was_down_ends_cancelled(tmp_path):
    async def main():
        s = settings(tmp_path)
        store = Store(s.db_path)
        queue(store, "job-a")
        store.claim_next()
        store.append_event("job-a", "state_change", {"state": "CANCELLING", "message": "cancel requested"},
                           {"state": JobState.CANCELLING})
        manager = JobManager(s, store, launcher=FakeLauncher())
        await manager.start()
        await manager.stop()
        assert states(store, "job-a") == ["QUEUED", "RUNNING", "CANCELLING", "CANCELLED"]
        store.close()

    asyncio.run(main())
