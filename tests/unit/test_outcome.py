"""Every branch of the decision that ends a job's attempt (server/tunewire_server/outcome.py)."""

from tunewire_server.jobs.outcome import RESUME, decide, retry_limit
from tunewire_server.jobs.states import JobState
from tunewire_server.protocol import JobError, Result

USER = JobError("BAD_DATA", "USER", "row 3 has no label", "train_dataset")
SYSTEM = JobError.system("CUDA_OOM", "out of memory")


def ended(**facts):
    base = dict(exit_code=1, exit_description="the training worker exited with code 1 without a result",
                result=None, model_saved=False, error=None, cancel_requested=False, stopping=False,
                recording_error=None, attempt=1, max_retries=2)
    return decide(**{**base, **facts})


def test_success_needs_exit_0_a_result_and_the_saved_model():
    done = ended(exit_code=0, result=Result({"loss": 0.5}), model_saved=True)
    assert (done.state, done.metrics, done.error) == (JobState.SUCCEEDED, {"loss": 0.5}, None)
    assert ended(exit_code=0, result=Result({}), model_saved=False).state != JobState.SUCCEEDED
    assert ended(exit_code=0, result=None, model_saved=True).state != JobState.SUCCEEDED


def test_a_cancel_wins_over_everything():
    assert ended(cancel_requested=True, error=SYSTEM, exit_code=0, result=Result(), model_saved=True,
                 recording_error=JobError.system("DISK_FULL", "full"), stopping=True).state == JobState.CANCELLED


def test_a_job_whose_progress_could_not_be_stored_fails_with_that_error_and_is_not_retried():
    disk = JobError.system("DISK_FULL", "the disk is full")
    out = ended(recording_error=disk, error=SYSTEM, exit_code=0, result=Result(), model_saved=True)
    assert (out.state, out.error) == (JobState.FAILED, disk)


def test_a_stop_without_an_error_leaves_the_job_for_the_next_start():
    assert ended(stopping=True, exit_code=0).state == RESUME
    assert ended(stopping=True, error=USER).state == JobState.FAILED  # an error ends it even while stopping


def test_a_user_error_is_never_retried():
    out = ended(error=USER, attempt=1, max_retries=5)
    assert (out.state, out.error) == (JobState.FAILED, USER)


def test_an_error_without_a_known_kind_is_not_retried():
    assert ended(error=JobError.from_dict({"code": "X", "message": "?"}), max_retries=5).state == JobState.FAILED


def test_a_system_error_is_retried_while_retries_are_left():
    first = ended(error=SYSTEM, attempt=1, max_retries=2)
    assert (first.state, first.error) == (JobState.QUEUED, SYSTEM)
    assert "1 of 2 retries" in first.message
    assert ended(error=SYSTEM, attempt=2, max_retries=2).state == JobState.QUEUED
    assert ended(error=SYSTEM, attempt=3, max_retries=2).state == JobState.FAILED
    assert ended(error=SYSTEM, attempt=1, max_retries=0).state == JobState.FAILED


def test_a_crash_without_a_message_is_a_retried_system_error_that_says_how_the_worker_ended():
    out = ended(exit_code=-9, exit_description="the training worker was killed by SIGKILL", attempt=1, max_retries=1)
    assert out.state == JobState.QUEUED and out.error.code == "WORKER_CRASHED"
    assert out.error.kind == "SYSTEM" and "SIGKILL" in out.error.message
    last = ended(exit_code=-9, exit_description="killed", attempt=2, max_retries=1)
    assert (last.state, last.error.code) == (JobState.FAILED, "WORKER_CRASHED")


def test_retries_are_capped_by_the_setting():
    assert retry_limit(4_294_967_295, 3) == 3
    assert retry_limit(1, 3) == 1
    assert retry_limit(5, 0) == 0
    assert retry_limit(-1, 3) == 0
