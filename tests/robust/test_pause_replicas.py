"""Pause and resume across replicas (issues 15 and 17): two real `tunewire-server` processes on 127.0.0.1
sharing one PostgreSQL and one data folder, tiny real classification jobs. A pause sent to the replica
that does not run the job reaches the one that does; the job checkpoints, its lease is released, and a
resume through either replica continues it from the step it paused at.
"""

from __future__ import annotations

import pytest

from tests import tiny
from tests.robust.test_replicas import Replica
from tests.support.postgres import postgres_server  # noqa: F401 - the session's PostgreSQL
from tests.support.specs import tiny_classification
from tests.support.waiting import wait_for
from tunewire import CheckpointSaved, JobState, StateChange, TrainLog

pytestmark = pytest.mark.slow

STEPS = 400  # long enough that the pause lands mid-training on a loaded machine


@pytest.fixture(scope="module")
def replicas(postgres_server, tmp_path_factory):  # noqa: F811 - the fixture imported above
    models = tmp_path_factory.mktemp("models")
    tiny.build_tiny_bert(models / "tiny-bert")
    data = tmp_path_factory.mktemp("shared")
    tiny.write_jsonl(data / "datasets" / "train.jsonl", tiny.sentiment_rows(32))
    url = postgres_server.new_database()
    started = [Replica(f"r{i}", data, models, url) for i in (1, 2)]
    try:
        started[0].start()  # first alone: it creates the shared folder's checkpoint key
        started[1].start()
        yield started, url
    finally:
        for replica in started:
            if replica.process is not None:
                replica.process.stop()


def owner(url: str, job_id: str) -> str | None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT lease_owner FROM jobs WHERE id = %s", (job_id,)).fetchone()
    return row[0] if row else None


def test_a_pause_through_the_other_replica_checkpoints_and_a_resume_continues_from_that_step(replicas):
    (r1, r2), url = replicas
    spec = tiny_classification(max_steps=STEPS, logging_steps=1, save_strategy="no", lr_scheduler_type="constant",
                               learning_rate=0.001)
    with r1.client() as c:
        job = c.submit(spec).id
    runner_name = wait_for(lambda: owner(url, job), timeout=120)
    runner, other = (r1, r2) if runner_name == "r1" else (r2, r1)
    with other.client() as c:
        wait_for(lambda: c.get(job).progress > 0, timeout=180)
        assert c.pause(job).state == JobState.PAUSING
        paused = c.wait(job, return_when_paused=True)
        assert paused.state == JobState.PAUSED
        assert owner(url, job) is None  # the lease is released: no replica holds the paused job
        events = list(_until_paused(c, job))
    saved = [e.data.step for e in events if isinstance(e.data, CheckpointSaved)]
    paused_change = events[-1].data
    assert saved and paused_change.message == f"paused at step {saved[-1]}"
    logged = [e.data.step for e in events if isinstance(e.data, TrainLog) and e.data.loss is not None]
    assert logged[-1] == saved[-1] < STEPS
    assert "job pause requested through another replica" in runner.log()

    with runner.client() as c:  # a job submitted while it is paused runs: the replica is free
        quick = c.submit(tiny_classification(max_steps=2, save_strategy="no")).id
        assert c.wait(quick).state == JobState.SUCCEEDED
        assert c.get(job).state == JobState.PAUSED

        assert c.resume(job).state in (JobState.QUEUED, JobState.RUNNING)
        done = c.wait(job)
        assert done.state == JobState.SUCCEEDED and done.attempts == 2
        every = list(c.stream_metrics(job))
    # from the paused step on: none repeated, none skipped (each attempt's train() ends with a summary log,
    # without a loss, at the step it stopped at)
    steps = [e.data.step for e in every if isinstance(e.data, TrainLog) and e.data.loss is not None]
    assert steps == list(range(1, STEPS + 1))
    assert [e.data.state for e in every if isinstance(e.data, StateChange)] == [
        JobState.QUEUED, JobState.RUNNING, JobState.PAUSING, JobState.PAUSED, JobState.QUEUED, JobState.RUNNING,
        JobState.SUCCEEDED]


def _until_paused(client, job_id: str):
    for event in client.stream_metrics(job_id):
        yield event
        if isinstance(event.data, StateChange) and event.data.state == JobState.PAUSED:
            return
