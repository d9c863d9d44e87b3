"""The control plane's side of EstimateJob: SubmitJob's full validation, then the estimate worker (a fresh
`python -m tunewire_server.worker.estimate.main`; nothing here imports torch), then the answer.

Time comes from this server's earlier jobs of the model (history.py) when there are any, else from a
probe of PROBE_STEPS real training steps in the worker.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from dataclasses import dataclass, field

import structlog

from tunewire.v1 import job_pb2
from tunewire_server import validation
from tunewire_server.config import Settings
from tunewire_server.errors import FieldViolation, InvalidSpec, ResourceExhausted, TunewireError
from tunewire_server.estimates import history, memory, timing
from tunewire_server.estimates.protocol import EstimateFailure, EstimateReply, EstimateRequest, decode, encode
from tunewire_server.store import Store
from tunewire_server.workers.process import WorkerProcess

log = structlog.get_logger("tunewire.estimates")

WORKER_MODULE = "tunewire_server.worker.estimate.main"
PROBE_STEPS = 4  # micro-batches timed after the warm-up one
PROBE_SETUP_S = 0.1  # a job's setup the probe does not see: the final save (0.06-0.18 s in bench/estimates.py)
BATCH_OVERHEAD_S = 0.0  # the trainer loop's own cost per micro-batch beyond the probe's (none measurable)
WORKER_TIMEOUT_S = 600.0
MAX_WAITING = 4  # estimates waiting for the worker slot before more are refused


@dataclass(frozen=True)
class JobEstimate:
    """What EstimateJob answers (the API's JobEstimate)."""

    train_rows: int
    eval_rows: int
    train_tokens: int
    truncated_rows: int
    max_length: int
    token_length_p50: int
    token_length_p95: int
    token_length_max: int
    steps_per_epoch: int
    total_steps: int
    memory: memory.Breakdown
    device: str
    device_memory_bytes: int
    fits: bool
    suggested_batch_size: int
    suggested_max_length: int
    estimated_seconds: float
    time_basis: str
    notes: list[str] = field(default_factory=list)


def assemble(reply: EstimateReply, plan: dict, measured: history.Throughput | None) -> JobEstimate:
    """The estimate from the worker's facts, the plan's hyperparameters and the measured throughput."""
    hp = plan["hyperparameters"]
    data, model = reply.data, reply.model
    batch, accumulation = hp["per_device_train_batch_size"], hp["gradient_accumulation_steps"]
    steps = timing.steps(data.train_sequences, batch, accumulation, hp["num_train_epochs"], hp["max_steps"])
    shape = memory.job_shape(model, batch, data.peak_length, reply.precision_bytes, reply.mixed_precision,
                             reply.gradient_checkpointing, reply.device.kind)
    breakdown = memory.estimate(model, shape)
    available = reply.device.memory_bytes
    fits = breakdown.total <= available
    suggested = memory.suggestions(model, shape, available) if not fits else (0, 0)
    notes = list(reply.notes)
    if not fits:
        notes.append(f"the estimated peak ({breakdown.total / 2**20:.0f} MiB) is more than the "
                     f"{available / 2**20:.0f} MiB the device has free")
    evaluations = timing.evaluations(hp["eval_strategy"] or "no", steps.total, steps.per_epoch, hp["eval_steps"],
                                     bool(hp.get("eval_on_start")))
    work = timing.workload(steps.total, batch, accumulation, data.mean_train_length, data.train_sequences,
                           data.eval_rows, data.mean_eval_length, evaluations, data.mean_unpadded_length)
    if measured is not None:  # earlier jobs' logs count tokens as TRL does: padding left out
        seconds = timing.seconds(work.counted_as_trl_does(), measured.tokens_per_second, measured.setup_seconds)
        jobs = "job" if measured.jobs == 1 else "jobs"
        basis = f"measured: {measured.jobs} earlier {jobs} of this model ({measured.tokens_per_second:.0f} tokens/s)"
    elif reply.probe is not None and reply.probe.seconds > 0:
        probe = reply.probe
        rate = probe.tokens / probe.seconds
        # the job's setup as measured: its data phase and model load (or, for SFT, the whole trainer's
        # creation), its first step's first-call costs, and what no probe sees (the final save)
        built = probe.build_seconds or reply.prepare_seconds + probe.load_seconds
        first_call = max(0.0, probe.warmup_seconds - probe.seconds / max(probe.steps, 1))  # the steps count it once
        seconds = timing.seconds(work.counted_as_trl_does() if probe.unpadded else work, rate,
                                 built + first_call + PROBE_SETUP_S, BATCH_OVERHEAD_S)
        basis = f"probe: {reply.probe.steps} steps ({rate:.0f} tokens/s)"
    else:
        seconds, basis = 0.0, "none: no earlier job of this model and no probe that fits"
    return JobEstimate(
        train_rows=data.train_rows, eval_rows=data.eval_rows, train_tokens=data.train_tokens,
        truncated_rows=data.truncated_rows, max_length=data.max_length, token_length_p50=data.p50,
        token_length_p95=data.p95, token_length_max=data.max, steps_per_epoch=steps.per_epoch,
        total_steps=steps.total, memory=breakdown, device=reply.device.name, device_memory_bytes=available,
        fits=fits, suggested_batch_size=suggested[0], suggested_max_length=suggested[1],
        estimated_seconds=seconds, time_basis=basis, notes=notes)


class Estimator:
    """Runs estimates for the API, one worker at a time."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._slot = asyncio.Semaphore(1)
        self._waiting = 0

    async def estimate(self, spec: job_pb2.JobSpec) -> JobEstimate:
        """Validate `spec` as SubmitJob does (InvalidSpec naming the field), then estimate it."""
        try:
            plan = await asyncio.wait_for(asyncio.to_thread(validation.validate, spec, self.settings),
                                          self.settings.validation_timeout_s)
        except TimeoutError:
            raise ResourceExhausted("checking the spec took too long; try again later") from None
        measured = await asyncio.to_thread(history.measured, self.store, plan)
        if self._waiting >= MAX_WAITING:
            raise ResourceExhausted(f"{self._waiting} estimates are waiting; try again later")
        self._waiting += 1
        try:
            await self._slot.acquire()
        finally:
            self._waiting -= 1
        try:
            reply = await self._run(EstimateRequest(spec_json=validation.spec_to_json(spec), plan=plan,
                                                    probe_steps=0 if measured else PROBE_STEPS,
                                                    memory_limit_bytes=self.settings.estimate_memory_mb * 2**20))
        finally:
            self._slot.release()
        return assemble(reply, plan, measured)

    async def _run(self, request: EstimateRequest) -> EstimateReply:
        """One estimate worker, from start to exit."""
        folder = self.settings.data_dir / "estimates" / uuid.uuid4().hex
        request = EstimateRequest(**{**request.__dict__, "cache_dir": str(folder)})
        env = {"TUNEWIRE_TRAINING_NICENESS": str(self.settings.training_niceness)}
        if self.settings.torch_threads:
            env["TUNEWIRE_TORCH_THREADS"] = str(self.settings.torch_threads)
        worker = await WorkerProcess.start(WORKER_MODULE, self.settings.data_dir / "workers" / "estimate.log",
                                           folder, env)
        try:
            await worker.send_line(encode(request))
            line = await asyncio.wait_for(worker.read_line(), WORKER_TIMEOUT_S)
        except TimeoutError:
            raise TunewireError(f"the estimate took more than {WORKER_TIMEOUT_S:.0f} s") from None
        finally:
            worker.kill()
            await worker.wait()
            shutil.rmtree(folder, ignore_errors=True)
        if line is None:
            raise TunewireError("the estimate worker exited without an answer; see workers/estimate.log")
        message = decode(line)
        if isinstance(message, EstimateFailure):
            if message.field:
                raise InvalidSpec(FieldViolation(message.field, message.message))
            raise TunewireError(message.message)
        if not isinstance(message, EstimateReply):
            raise TunewireError("the estimate worker answered something else")
        return message
