"""How a job's attempt ends: one pure decision from what the worker and the server saw.

The scheduler gathers the facts (the worker's exit code, its result and error, whether a cancel, a pause
or a shutdown came, whether the job's events could be stored) and records what `decide` returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunewire_server import validation
from tunewire_server.jobs.states import JobState
from tunewire_server.protocol import JobError, Result, payload

RESUME = JobState.RUNNING  # left RUNNING: the next start of the server resumes the job


@dataclass(frozen=True)
class Outcome:
    """`state` is terminal, QUEUED (a retry, to the back of the queue), PAUSED or RESUME. `pause`: the
    attempt ended because the job was paused, so it is counted in the job's pauses (not as a failure)."""

    state: JobState
    message: str
    error: JobError | None = None
    metrics: dict | None = None
    pause: bool = False
    step: int | None = None  # PAUSED: the step of the newest complete checkpoint, where it resumes


def retry_limit(job_max_retries: int, setting: int) -> int:
    """The retries a job gets: what it asked for, capped by the server's setting (also for jobs stored
    before the cap existed)."""
    return max(0, min(job_max_retries, setting))


def decide(*, exit_code: int | None, exit_description: str, result: Result | None, model_saved: bool,
           error: JobError | None, cancel_requested: bool, stopping: bool, recording_error: JobError | None,
           attempt: int, max_retries: int, pause_requested: bool = False) -> Outcome:
    """The end of attempt `attempt` (1 for the first run, attempts ended by a pause not counted) of a job
    allowed `max_retries` retries.

    recording_error: why the server could not store the job's events (the worker was stopped for it),
    None if it could. Only an error of kind SYSTEM is retried; a USER error would fail again.
    pause_requested: the job was paused (its worker asked to checkpoint and stop): unless it finished
    first or hit a USER error, it is PAUSED, to resume from its newest complete checkpoint (a SYSTEM error
    as it stopped, e.g. killed after the grace, loses at most the steps since the checkpoint before).
    """
    if cancel_requested:
        return Outcome(JobState.CANCELLED, "cancelled")
    if recording_error is not None:
        return Outcome(JobState.FAILED, recording_error.message, error=recording_error)
    if exit_code == 0 and result is not None and model_saved:
        return Outcome(JobState.SUCCEEDED, "finished", metrics=payload(result)["metrics"])
    if pause_requested and (error is None or error.kind == "SYSTEM"):
        detail = f" (the worker failed as it stopped: {error.message})" if error is not None else ""
        return Outcome(JobState.PAUSED, "paused" + detail, pause=True)
    if stopping and error is None:
        return Outcome(RESUME, "left RUNNING for the next start to resume")
    error = error or JobError.system("WORKER_CRASHED", exit_description)
    if error.kind == "SYSTEM" and attempt <= max_retries:
        return Outcome(JobState.QUEUED, f"{error.message}; retrying from the last complete checkpoint "
                                        f"({attempt} of {max_retries} retries)", error=error)
    return Outcome(JobState.FAILED, error.message, error=error)


def job_retry_limit(spec_json: str, setting: int) -> int:
    """The retries the job stored with `spec_json` gets (retry_limit of its max_retries)."""
    return retry_limit(validation.spec_from_json(spec_json).max_retries, setting)
