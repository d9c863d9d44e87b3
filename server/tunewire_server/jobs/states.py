"""Job states and the transitions allowed between them."""

from __future__ import annotations

from tunewire.types import JobState  # the contract's states are the domain's states

__all__ = ["TERMINAL", "TRANSITIONS", "IllegalTransition", "JobState", "check_transition"]

TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED, JobState.PAUSED}),
    # RUNNING -> QUEUED: a system failure with retries left, or a restart that resumes the job.
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLING, JobState.QUEUED,
                                 JobState.PAUSING}),
    JobState.CANCELLING: frozenset({JobState.CANCELLED, JobState.FAILED, JobState.SUCCEEDED}),
    # PAUSING: the worker is writing a checkpoint; it may also finish or fail first, or be cancelled.
    # PAUSING -> RUNNING: a resume before the pause ended withdraws it (the attempt, once its worker has
    # stopped, is queued again instead of PAUSED); PAUSING -> QUEUED: that, or a retry.
    JobState.PAUSING: frozenset({JobState.PAUSED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLING,
                                 JobState.QUEUED, JobState.RUNNING}),
    # PAUSED holds no worker: ResumeJob queues it again; CancelJob ends it.
    JobState.PAUSED: frozenset({JobState.QUEUED, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class IllegalTransition(Exception):
    pass


def check_transition(current: JobState, new: JobState) -> None:
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"{current.value} -> {new.value}")
