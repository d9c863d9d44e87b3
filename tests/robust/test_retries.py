"""Issue 12 item 8: one job must not hold the queue. Retries are capped by the server's setting (also for
jobs stored before it changed), a retried job waits behind the jobs queued before its retry, and a user
error is never retried. Real servers, real tiny training, the worker killed for a system failure."""

from __future__ import annotations

import os
import signal

import pytest

from tests.robust.test_faults import first, long_spec, short_spec, states, write_data
from tests.support.waiting import wait_for
from tunewire import JobState, StateChange, TrainLog

pytestmark = pytest.mark.slow


def crash_attempt(st, client, job_id: str, after_seq: int = 0) -> int:
    """Wait for the job's training to log (after `after_seq`), SIGKILL its worker; return the job's last seq."""
    first(client, job_id, TrainLog, after=after_seq)
    pid_file = st.settings.jobs_dir / job_id / "worker.pid"
    pid = wait_for(lambda: pid_file.exists() and int(pid_file.read_text() or 0))
    os.kill(pid, signal.SIGKILL)
    return client.get(job_id).last_seq


def running_times(client, job_id: str) -> list[float]:
    return [e.time.timestamp() for e in client.stream_metrics(job_id)
            if isinstance(e.data, StateChange) and e.data.state == JobState.RUNNING]


def test_a_retried_job_goes_behind_the_queue_and_its_retries_are_capped_by_the_setting(server_factory, tmp_path):
    import tunewire

    st = server_factory(max_job_retries=3)
    write_data(st.settings.data_dir)
    with tunewire.Client(st.address, timeout=30) as c:
        flaky = c.submit(long_spec(max_steps=100000, max_retries=3))
        first(c, flaky.id, TrainLog)
        behind = c.submit(short_spec())  # queued while the flaky job runs, before its retry
        st.settings.max_job_retries = 1  # the operator lowers the cap: it holds for the stored job too
        seq = crash_attempt(st, c, flaky.id)
        # Either the job queued before the retry starts, or (the bug) the retry runs first.
        wait_for(lambda: c.get(behind.id).state != JobState.QUEUED or c.get(flaky.id).attempts >= 2)
        assert c.get(behind.id).state != JobState.QUEUED, "the retried job ran before the job queued before it"
        assert c.wait(behind.id).state == JobState.SUCCEEDED
        crash_attempt(st, c, flaky.id, after_seq=seq)
        failed = c.wait(flaky.id, raise_on_failure=False)
        assert (failed.state, failed.attempts, failed.error.code) == (JobState.FAILED, 2, "WORKER_CRASHED")
        assert states(c, flaky.id) == [JobState.QUEUED, JobState.RUNNING, JobState.QUEUED, JobState.RUNNING,
                                       JobState.FAILED]
        # The job queued before the retry started before the retry's second attempt.
        (started_behind,) = running_times(c, behind.id)
        assert started_behind < running_times(c, flaky.id)[1]


def test_a_user_error_is_not_retried(server, client):
    write_data(server.settings.data_dir)
    spec = short_spec()
    spec["max_retries"] = 1
    spec["train_dataset"] = {"hub": {"name": "nobody/no-such-dataset"}}
    failed = client.wait(client.submit(spec).id, raise_on_failure=False)
    assert (failed.state, failed.error.kind, failed.attempts) == (JobState.FAILED, "USER", 1)
    assert states(client, failed.id) == [JobState.QUEUED, JobState.RUNNING, JobState.FAILED]
