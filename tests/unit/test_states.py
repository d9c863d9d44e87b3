import pytest

from tunewire_server.jobs.states import TERMINAL, IllegalTransition, JobState, check_transition


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_never_change(state):
    for new in JobState:
        with pytest.raises(IllegalTransition):
            check_transition(state, new)


def test_lifecycle():
    check_transition(JobState.QUEUED, JobState.RUNNING)
    check_transition(JobState.RUNNING, JobState.CANCELLING)
    check_transition(JobState.CANCELLING, JobState.CANCELLED)
    check_transition(JobState.QUEUED, JobState.CANCELLED)
    with pytest.raises(IllegalTransition):
        check_transition(JobState.QUEUED, JobState.SUCCEEDED)
    with pytest.raises(IllegalTransition):
        check_transition(JobState.CANCELLING, JobState.RUNNING)
