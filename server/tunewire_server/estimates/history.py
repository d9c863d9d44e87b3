"""Training throughput this server measured on earlier jobs, read from the store.

For each recent SUCCEEDED job (one attempt) of the same shape (model, task, full or LoRA, batch, length) whose train logs carry
num_tokens (SFT: TRL counts the tokens it trains on): tokens/s between its first and last train log, and
its setup time (RUNNING to the first log, plus the last log to the end, less one logging interval's share).
A classification job's logs carry no token counts, so it has no history here and is probed instead.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass

from tunewire_server.jobs.states import JobState
from tunewire_server.store import Store

RECENT_JOBS = 50  # succeeded jobs looked at, newest first
MAX_EVENTS = 5000  # events read per job


@dataclass(frozen=True)
class Throughput:
    """The median of the earlier jobs' measurements."""

    tokens_per_second: float
    setup_seconds: float
    jobs: int


def shape(plan: dict) -> tuple:
    """What makes two jobs' tokens/s comparable: the model, the task, full or LoRA training (LoRA skips the
    base weights' gradients and updates), the batch size and the length its rows are cut at (a smaller batch
    computes fewer tokens per second; a longer row costs more per token in attention)."""
    hp = plan.get("hyperparameters") or {}
    task = plan.get("task")
    options = plan.get(task) if isinstance(plan.get(task), dict) else {}
    return (plan.get("base_model"), task, plan.get("lora") is not None, hp.get("per_device_train_batch_size"),
            hp.get("gradient_accumulation_steps"), options.get("max_length"), options.get("packing"),
            hp.get("precision"), hp.get("gradient_checkpointing"))


def measured(store: Store, plan: dict) -> Throughput | None:
    """Throughput of earlier jobs of the same shape as `plan` (shape()), or None when no such job measured
    one: a job of another shape is probed instead."""
    rates, setups = [], []
    wanted = shape(plan)
    for job in store.list_jobs([JobState.SUCCEEDED], limit=RECENT_JOBS):
        if job.attempts != 1 or job.started_at is None or job.ended_at is None or not job.plan_json:
            continue
        if shape(json.loads(job.plan_json)) != wanted:
            continue
        logs = [(e.time, e.payload) for e in store.events_after(job.id, 0, limit=MAX_EVENTS) if e.kind == "train_log"]
        logs = [(t, p) for t, p in logs if isinstance(p.get("num_tokens"), (int, float))]
        if len(logs) < 2:
            continue
        (t0, first), (t1, last) = logs[0], logs[-1]
        tokens = last["num_tokens"] - first["num_tokens"]
        if t1 <= t0 or tokens <= 0:
            continue
        rate = tokens / (t1 - t0)
        rates.append(rate)
        # before the first log: setup and the first logged step's tokens
        setups.append(max(0.0, (job.ended_at - job.started_at) - (t1 - t0) - first["num_tokens"] / rate))
    if not rates:
        return None
    return Throughput(statistics.median(rates), statistics.median(setups), len(rates))
