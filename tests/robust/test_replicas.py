"""Issue 15's shared queue: three real `tunewire-server` processes on 127.0.0.1 sharing one PostgreSQL (the
`store` setting) and one data folder, as pods sharing a ReadWriteMany volume would (tests/support/replicas.py).
Tiny real jobs.

The replicas run with a 3 s lease (heartbeat 0.5 s), so a dead replica's job is taken over within seconds.
Figures seen on the way (takeover after kill -9, handover on SIGTERM, callback -> client, the PostgreSQL
restart) are printed and written to $TUNEWIRE_REPLICA_FIGURES when it is set; bench/replicas.py measures
them properly.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import tunewire
from tests import tiny
from tests.support.postgres import postgres_server  # noqa: F401 - the session's PostgreSQL
from tests.support.replicas import Cluster, Replica
from tests.support.specs import tiny_classification
from tests.support.waiting import wait_for
from tunewire import CheckpointSaved, JobState, StateChange

pytestmark = pytest.mark.slow

LEASE_S = 3.0
HEARTBEAT_S = 0.5
FIGURES: dict = {}


@pytest.fixture(scope="module")
def cluster(postgres_server, tmp_path_factory):  # noqa: F811 - the fixture imported above
    from tests import tiny as tiny_models

    models = tmp_path_factory.mktemp("models")
    tiny_models.build_tiny_bert(models / "tiny-bert")
    data = tmp_path_factory.mktemp("shared")
    tiny.write_jsonl(data / "datasets" / "train.jsonl", tiny.sentiment_rows(32))
    cluster = Cluster(postgres_server.new_database(), data, models, lease_s=LEASE_S, heartbeat_s=HEARTBEAT_S)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        if os.environ.get("TUNEWIRE_REPLICA_FIGURES"):
            Path(os.environ["TUNEWIRE_REPLICA_FIGURES"]).write_text(json.dumps(FIGURES, indent=2))
        print("replica figures:", json.dumps(FIGURES))


def short_spec(max_steps: int = 2) -> dict:
    return tiny_classification(max_steps=max_steps, logging_steps=1, save_strategy="no")


def long_spec(max_steps: int = 100000, save_steps: int = 20) -> dict:
    return tiny_classification(max_steps=max_steps, logging_steps=5, save_strategy="steps", save_steps=save_steps,
                               save_total_limit=2, lr_scheduler_type="constant", learning_rate=0.001)


def events(client: tunewire.Client, job_id: str) -> list:
    return list(client.stream_metrics(job_id))


def state_changes(evs: list) -> list:
    return [e for e in evs if isinstance(e.data, StateChange)]


def first_state_changes(client: tunewire.Client, job_id: str, n: int) -> list:
    """The job's first n state changes, read from its stream while it still runs."""
    found = []
    for event in client.stream_metrics(job_id):
        if isinstance(event.data, StateChange):
            found.append(event)
            if len(found) == n:
                break
    return found


def delays(replica: Replica, job_id: str, n: int) -> list[float]:
    """Seconds from each of the job's next n train logs (the worker's callback time) to this client, live."""
    found = []
    with replica.client() as c:
        last = c.get(job_id).last_seq
        for event in c.stream_metrics(job_id, after_seq=last):
            found.append(time.time() - event.time.timestamp())
            if len(found) == n:
                break
    return found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def running_on(cluster: Cluster, job_id: str, timeout: float = 60) -> str:
    return wait_for(lambda: cluster.owner(job_id), timeout=timeout)


def test_30_jobs_submitted_round_robin_all_succeed_each_run_exactly_once(cluster):
    clients = [r.client() for r in cluster.replicas]
    try:
        jobs = [clients[i % 3].submit(short_spec()).id for i in range(30)]  # all at once: the replicas race
        for i, job_id in enumerate(jobs):
            assert clients[(i + 1) % 3].wait(job_id).state == JobState.SUCCEEDED
        ran_on = {}
        for i, job_id in enumerate(jobs):
            stored = events(clients[i % 3], job_id)
            assert [e.data.state for e in state_changes(stored)] == [
                JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]
            assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
            starts = cluster.worker_starts(job_id)
            assert sum(starts.values()) == 1, (job_id, starts)  # run exactly once, by one replica
            ran_on[job_id] = next(iter(starts))
            views = {json.dumps(c.get(job_id).__dict__, default=str, sort_keys=True) for c in clients}
            assert len(views) == 1  # GetJob is the same through every replica
        listed = [[j.id for j in c.list_jobs(page_size=100)] for c in clients]
        assert listed[0] == listed[1] == listed[2] and set(jobs) <= set(listed[0])  # ListJobs too
        assert set(ran_on.values()) == {r.name for r in cluster.replicas}  # every replica took work from the queue
    finally:
        for c in clients:
            c.close()


def test_postgresql_restarted_while_jobs_run_loses_no_job_and_runs_none_twice(cluster, postgres_server):  # noqa: F811
    clients = [r.client() for r in cluster.replicas]
    try:
        jobs = [clients[i % 3].submit(short_spec(max_steps=150)).id for i in range(6)]
        # three running (one on each replica), each with progress stored: their events are being written
        wait_for(lambda: sum(clients[0].get(j).progress > 0 for j in jobs) >= 3, timeout=120)
        FIGURES["postgres_restart_s"] = round(postgres_server.restart(), 2)
        ended = {j: wait_for(lambda j=j: ended_or_none(clients[1], j), timeout=180) for j in jobs}
        for i, job_id in enumerate(jobs):
            assert ended[job_id].state == JobState.SUCCEEDED, (job_id, ended[job_id].error)
            assert ended[job_id].attempts == 1  # never taken over nor retried
            stored = events(clients[i % 3], job_id)
            assert [e.data.state for e in state_changes(stored)] == [
                JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]
            assert [e.seq for e in stored] == list(range(1, len(stored) + 1))  # no gap, no duplicate
            assert sum(cluster.worker_starts(job_id).values()) == 1, job_id
    finally:
        for c in clients:
            c.close()
    assert all(r.alive for r in cluster.replicas)


def ended_or_none(client: tunewire.Client, job_id: str):
    """The job once it is terminal; None before, and while the replica cannot answer (PostgreSQL restarting)."""
    try:
        job = client.get(job_id)
    except tunewire.TunewireError:
        return None
    return job if job.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED) else None


def test_one_request_id_through_three_replicas_at_once_is_one_job(cluster):
    clients = [r.client() for r in cluster.replicas]
    barrier = threading.Barrier(3)

    def submit(c):
        barrier.wait()
        return c.submit(short_spec(), request_id="same-everywhere").id
    try:
        with ThreadPoolExecutor(3) as pool:
            ids = list(pool.map(submit, clients))
        assert len(set(ids)) == 1
        assert clients[0].wait(ids[0]).state == JobState.SUCCEEDED
    finally:
        for c in clients:
            c.close()


def test_kill_9_of_the_running_replica_hands_the_job_to_another_that_resumes_it(cluster):
    submitter = cluster.replicas[0]
    with submitter.client() as c:
        job = c.submit(long_spec(max_steps=400)).id
    owner = running_on(cluster, job)
    watcher = cluster.others(owner)[0]  # streams through a replica that does not run the job
    streamed: list = []
    stream_done = threading.Event()

    def follow():
        with watcher.client() as wc:
            for event in wc.stream_metrics(job):
                streamed.append(event)
        stream_done.set()
    threading.Thread(target=follow, daemon=True).start()
    wait_for(lambda: any(isinstance(e.data, CheckpointSaved) for e in streamed), timeout=120)
    victim = cluster.by_name(owner)
    victim.process.signal(signal.SIGKILL)
    killed_at = time.time()
    victim.process.wait()
    taker = wait_for(lambda: (o := cluster.owner(job)) not in (None, owner) and o, timeout=LEASE_S + 30)
    before = len(victim.log())
    victim.start()  # back while its old job runs elsewhere: it must not touch it
    with watcher.client() as wc:
        done = wc.wait(job)
        stored = events(wc, job)
    assert done.state == JobState.SUCCEEDED and done.attempts == 2
    running = [e for e in state_changes(stored) if e.data.state == JobState.RUNNING]
    takeover_s = running[1].time.timestamp() - killed_at
    FIGURES["takeover_after_kill_9_s"] = {"lease_s": LEASE_S, "heartbeat_s": HEARTBEAT_S,
                                          "seconds": round(takeover_s, 2)}
    assert takeover_s < LEASE_S + 5
    assert [e.data.state for e in state_changes(stored)] == [
        JobState.QUEUED, JobState.RUNNING, JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))  # continuous, no duplicates
    assert stream_done.wait(30)
    assert [e.seq for e in streamed] == [e.seq for e in stored]  # the watcher saw every event, in order
    assert "resuming from checkpoint-" in (cluster.data / "jobs" / job / "worker.log").read_text()
    assert sum(cluster.worker_starts(job).values()) == 2 and job in cluster.by_name(taker).log()
    assert job not in victim.log()[before:]  # restarted, it neither took it over nor ran it nor wrote for it


def test_cancel_through_a_third_replica_stops_the_job(cluster):
    with cluster.replicas[0].client() as c:
        job = c.submit(long_spec()).id
    owner = running_on(cluster, job)
    third = [r for r in cluster.others(owner) if r is not cluster.replicas[0]][0]
    with ThreadPoolExecutor(2) as pool:  # callback -> client: through the replica running it, and another
        same, other = pool.map(lambda r: delays(r, job, 20), [cluster.by_name(owner), third])
    FIGURES["callback_to_client_ms"] = {
        where: {"n": len(d), "p50": round(1000 * statistics.median(d), 1), "p99": round(1000 * percentile(d, 0.99), 1)}
        for where, d in (("same_replica", same), ("other_replica", other))}
    with third.client() as c:
        wait_for(lambda: c.get(job).progress > 0, timeout=120)
        t0 = time.monotonic()
        c.cancel(job)
        done = c.wait(job, raise_on_failure=False)
        FIGURES["cancel_through_another_replica_s"] = round(time.monotonic() - t0, 2)
        assert done.state == JobState.CANCELLED
        assert [e.data.state for e in state_changes(events(c, job))] == [
            JobState.QUEUED, JobState.RUNNING, JobState.CANCELLING, JobState.CANCELLED]


def test_sigterm_of_the_running_replica_hands_the_job_over_at_once(cluster):
    with cluster.replicas[0].client() as c:
        job = c.submit(long_spec()).id
    owner = running_on(cluster, job)
    victim = cluster.by_name(owner)
    watcher = cluster.others(owner)[0]
    with watcher.client() as c:
        wait_for(lambda: c.get(job).progress > 0, timeout=120)
        victim.process.signal(signal.SIGTERM)
        t0 = time.time()
        taker = wait_for(lambda: (o := cluster.owner(job)) not in (None, owner) and o, timeout=60)
        changes = first_state_changes(c, job, 4)  # the job runs on: read only what is there
        handed, resumed = changes[2], changes[3]
        assert (handed.data.state, resumed.data.state) == (JobState.QUEUED, JobState.RUNNING)
        assert "handed over" in handed.data.message
        FIGURES["handover_on_sigterm_s"] = {"sigterm_to_queued": round(handed.time.timestamp() - t0, 2),
                                            "sigterm_to_running_elsewhere": round(resumed.time.timestamp() - t0, 2),
                                            "queued_to_running_ms": round(
                                                1000 * (resumed.time - handed.time).total_seconds(), 1)}
        # No lease wait: the job is queued again as soon as its checkpoint is saved. A replica then claims it
        # once its worker is ready (replicas claim only with a ready worker), so RUNNING may follow later.
        assert handed.time.timestamp() - t0 < LEASE_S
        assert victim.process.wait(30) == 0
        c.cancel(job)
        assert c.wait(job, raise_on_failure=False).state == JobState.CANCELLED
    assert taker != owner
    victim.start()
