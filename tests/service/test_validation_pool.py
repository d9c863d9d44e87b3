"""Issue 12 item 5: checks of submitted jobs run on their own bounded pool. Blocked checks (or anything
else blocking the event loop's default executor) never stall the control plane; a submit that cannot get
a check thread in time is refused with RESOURCE_EXHAUSTED. Real server, real validation."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import tunewire
from tests.robust.test_faults import short_spec, write_data
from tunewire import JobState


def hold(st, count: int, executor_of) -> threading.Event:
    """Occupy `count` threads of an executor of the server's loop until the returned event is set."""
    release = threading.Event()

    async def occupy():
        loop = asyncio.get_running_loop()
        for _ in range(count):
            executor_of(loop, release.wait)

    st.run(occupy())
    return release


def test_submits_do_not_depend_on_the_default_executor(server_factory):
    st = server_factory(validation_timeout_s=10)
    write_data(st.settings.data_dir)
    release = hold(st, 64, lambda loop, fn: loop.run_in_executor(None, fn))  # every default thread, and more
    try:
        with tunewire.Client(st.address, timeout=8) as client:
            job = client.submit(short_spec())
            assert client.get(job.id).state in (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED)
    finally:
        release.set()


def test_a_submit_waits_a_bounded_time_for_a_check_thread_and_other_calls_go_on(server_factory):
    st = server_factory(validation_threads=2, validation_timeout_s=1)
    write_data(st.settings.data_dir)
    manager = st.server.manager
    with tunewire.Client(st.address, timeout=20) as client:
        done = client.wait(client.submit(short_spec()).id)
        # Two hung checks hold both check threads (as a check stuck on a file would).
        release = threading.Event()
        hung = [asyncio.run_coroutine_threadsafe(manager._validation.run(release.wait, timeout=60), st.loop)
                for _ in range(2)]
        try:
            t0 = time.monotonic()
            with pytest.raises(tunewire.ResourceExhaustedError, match="busy"):
                client.submit(short_spec())
            assert time.monotonic() - t0 < 10  # refused after validation_timeout_s, not the call's deadline
            assert client.get(done.id).state == JobState.SUCCEEDED
            assert len(list(client.stream_metrics(done.id))) == done.last_seq  # replays are not blocked
        finally:
            release.set()
        assert [f.result(10) for f in hung] == [True, True]
        assert client.wait(client.submit(short_spec()).id).state == JobState.SUCCEEDED  # the threads came back


def test_not_found_quotes_only_a_prefix_of_the_job_id(server):
    from tunewire_server.errors import NotFound

    with pytest.raises(NotFound) as caught:
        server.server.manager.get("job-" + "x" * 100_000)
    assert len(caught.value.message) < 200
