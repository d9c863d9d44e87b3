"""One training run, timed: a job through the tunewire SDK as a client sees it, or a plain script
(bench/plain_<task>.py) that does the same training with transformers/TRL alone."""

from __future__ import annotations

import datetime as _dt
import json
import math
import subprocess
import time
from pathlib import Path

from environment import BENCH, PYTHON


def plain_command(task: str, *, model: Path, train_file: Path, output_dir: Path, max_steps: int,
                  logging_steps: int = 10, batch: int = 8, first_step_file: Path | None = None) -> list[str]:
    """`python bench/plain_<task>.py ...` with the arguments that match tests.support.specs' job of that task."""
    script = BENCH / ("plain_classification.py" if task == "classification" else "plain_sft.py")
    cmd = [PYTHON, str(script), "--model", str(model), "--train-file", str(train_file), "--output-dir",
           str(output_dir), "--max-steps", str(max_steps), "--logging-steps", str(logging_steps),
           "--batch-size", str(batch)]
    if first_step_file is not None:
        cmd += ["--first-step-file", str(first_step_file)]
    return cmd


def run_job(client, spec: dict, *, timeout: float = 1800) -> dict:
    """Submit `spec` and follow its events until it is terminal, as a client sees it.

    Returns seconds from just before SubmitJob to the receipt of the terminal state change
    (`elapsed`), and the wall-clock (time.time) moments: submitted, RUNNING (control plane's time),
    first training step (the worker's callback time) and its receipt. A job still running after
    `timeout` seconds is cancelled, which ends the stream."""
    import threading

    from tunewire import JobState, StateChange, TrainLog

    submitted = time.time()
    t0 = time.monotonic()
    job = client.submit(spec)
    watchdog = threading.Timer(timeout, lambda: client.cancel(job.id))
    watchdog.daemon = True
    watchdog.start()
    out = {"job_id": job.id, "submitted": submitted, "running": None, "first_step": None,
           "first_step_received": None, "state": None, "events": 0}
    try:
        for event in client.stream_metrics(job.id):
            out["events"] += 1
            data = event.data
            if isinstance(data, StateChange):
                if data.state == JobState.RUNNING and out["running"] is None:
                    out["running"] = event_epoch(event)
                if data.state.terminal:
                    out["elapsed"] = time.monotonic() - t0
                    out["state"] = data.state.value
                    break
            elif isinstance(data, TrainLog) and data.step >= 1:
                if out["first_step"] is None:
                    out["first_step"] = event_epoch(event)
                    out["first_step_received"] = time.time()
                if data.loss is not None:  # not the end-of-training summary
                    now = (event_epoch(event), data.step, data.num_tokens or 0.0)
                    out["first_log"] = out.get("first_log") or now
                    out["last_log"] = now
    finally:
        watchdog.cancel()
    if out["state"] != "SUCCEEDED":
        final = client.get(job.id)
        raise RuntimeError(f"job {job.id} ended {out['state']}: {final.error}")
    out["steps_per_s"] = steps_per_s(out.get("first_log"), out.get("last_log"))
    out["tokens_per_s"] = tokens_per_s(out.get("first_log"), out.get("last_log"))
    return out


def steps_per_s(first, last) -> float:
    """Training speed between two train logs given as (time, step)."""
    if not first or not last or last[1] <= first[1] or last[0] <= first[0]:
        return math.nan
    return (last[1] - first[1]) / (last[0] - first[0])


def tokens_per_s(first, last) -> float:
    """Tokens trained a second between two train logs given as (time, step, tokens so far): TRL's
    `num_tokens`, the tokens the batches held (padding included, none with padding-free packing)."""
    if not first or not last or len(first) < 3 or last[2] <= first[2] or last[0] <= first[0]:
        return math.nan
    return (last[2] - first[2]) / (last[0] - first[0])


def run_plain(cmd: list[str], env: dict, *, timeout: float = 1800) -> dict:
    """Run a plain script; `elapsed` is seconds from just before the process starts to the model saved
    (the script's last JSON line says when), `exit_elapsed` to the process exit."""
    started = time.time()
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    exit_elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{\"imported\"")][-1])
    return {"started": started, "elapsed": report["saved"] - started, "exit_elapsed": exit_elapsed,
            "imports": report["imported"] - started, "after_imports": report["saved"] - report["imported"],
            "train_and_save": report["saved"] - report["train_began"], "steps": report["steps"],
            "steps_per_s": steps_per_s(report.get("first_log"), report.get("last_log")),
            "tokens_per_s": tokens_per_s(report.get("first_log"), report.get("last_log"))}


def event_epoch(event) -> float:
    """A JobEvent's time (a naive UTC datetime from the wire Timestamp) as seconds since the epoch."""
    t = event.time
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t.timestamp()
