"""The service through a real server on 127.0.0.1:0 and the real SDK."""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

import tunewire
from tests import tiny
from tests.support.procs import training_workers
from tests.support.specs import tiny_classification
from tests.support.waiting import wait_for
from tunewire import JobState
from tunewire.v1 import job_pb2, tuning_service_pb2, tuning_service_pb2_grpc


def classification_spec(train="train.jsonl", **hp):
    return tiny_classification(train, **{"max_steps": 2, "save_strategy": "no", **hp})


@pytest.fixture
def data(server):
    tiny.write_jsonl(server.settings.dataset_root / "train.jsonl", tiny.sentiment_rows(16))
    return server.settings.dataset_root


def test_health_and_reflection(server, client):
    assert client.health()
    with grpc.insecure_channel(server.address) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "tunewire.v1.TuningService" in services and "grpc.health.v1.Health" in services


def test_invalid_spec_is_refused_with_field_violations_and_nothing_is_stored(client, data):
    bad = classification_spec(learning_rate=-1)
    bad["train_dataset"] = {"file": {"path": "../etc/passwd"}}
    with pytest.raises(tunewire.InvalidArgumentError) as info:
        client.submit(bad)
    fields = {v.field for v in info.value.violations}
    assert {"hyperparameters.learning_rate", "train_dataset.file.path"} <= fields
    assert list(client.list_jobs()) == []


def test_unknown_jobs_are_not_found(client):
    for call in (lambda: client.get("job-nope"), lambda: client.cancel("job-nope"),
                 lambda: client.predict("job-nope", ["x"]), lambda: list(client.stream_metrics("job-nope"))):
        with pytest.raises(tunewire.NotFoundError):
            call()
    with pytest.raises(tunewire.InvalidArgumentError):
        client.get("")


def test_request_id_makes_submit_idempotent(client, data):
    first = client.submit(classification_spec(), request_id="req-1")
    again = client.submit(classification_spec(), request_id="req-1")
    assert again.id == first.id
    with pytest.raises(tunewire.AlreadyExistsError):
        client.submit(classification_spec(max_steps=3), request_id="req-1")
    assert len(list(client.list_jobs())) == 1


def test_fifo_queue_cancel_and_predict_preconditions(client, data):
    long_job = client.submit(classification_spec(max_steps=100000, logging_steps=1))
    second = client.submit(classification_spec())
    waiting = [client.submit(classification_spec(seed=i)) for i in range(3)]  # queued in this order
    assert second.state == JobState.QUEUED and all(j.state == JobState.QUEUED for j in waiting)
    # a queued job is cancelled at once and never starts
    cancelled = client.cancel(second.id)
    assert cancelled.state == JobState.CANCELLED
    with pytest.raises(tunewire.FailedPreconditionError):
        client.predict(waiting[0].id, ["queued"])
    # the running job stops at its next step
    first_step = next(e for e in client.stream_metrics(long_job.id) if isinstance(e.data, tunewire.TrainLog))
    assert first_step.data.step >= 1
    t0 = time.monotonic()
    assert client.cancel(long_job.id).state in (JobState.CANCELLING, JobState.CANCELLED)
    done = client.wait(long_job.id, raise_on_failure=False)
    assert done.state == JobState.CANCELLED and time.monotonic() - t0 < 10
    finished = [client.wait(j.id) for j in waiting]
    assert all(j.state == JobState.SUCCEEDED for j in finished)
    assert client.get(second.id).started is None
    # FIFO: each waiting job started after the one submitted before it, and ended before the next started
    starts = [done.started] + [j.started for j in finished]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    for earlier, later in zip(finished, finished[1:], strict=False):
        assert earlier.ended <= later.started
    states = [e.data.state for e in client.stream_metrics(long_job.id) if isinstance(e.data, tunewire.StateChange)]
    assert states == [JobState.QUEUED, JobState.RUNNING, JobState.CANCELLING, JobState.CANCELLED]


def test_list_jobs_pages_and_filters(server, client, data):
    ids = [client.submit(classification_spec()).id for _ in range(5)]
    assert [j.id for j in client.list_jobs(page_size=2)] == ids[::-1]  # the SDK follows the pages
    client.cancel(ids[-1])
    assert [j.id for j in client.list_jobs(states=[JobState.CANCELLED])] == [ids[-1]]
    with grpc.insecure_channel(server.address) as channel:
        stub = tuning_service_pb2_grpc.TuningServiceStub(channel)
        # one page at a time: page_size is honoured and each token leads to the next page, newest first
        pages, token = [], ""
        while True:
            page = stub.ListJobs(tuning_service_pb2.ListJobsRequest(page_size=2, page_token=token), timeout=10)
            pages.append([j.id for j in page.jobs])
            token = page.next_page_token
            if not token:
                break
            assert len(pages) < 10, "the page tokens never end"
        assert pages == [ids[4:2:-1], ids[2:0:-1], ids[:1]]
        everything = stub.ListJobs(tuning_service_pb2.ListJobsRequest(), timeout=10)  # default page size 50
        assert [j.id for j in everything.jobs] == ids[::-1] and everything.next_page_token == ""
        one = stub.ListJobs(tuning_service_pb2.ListJobsRequest(page_size=1, states=[job_pb2.JOB_STATE_CANCELLED]),
                            timeout=10)
        assert [j.id for j in one.jobs] == [ids[-1]] and one.next_page_token == ""
        with pytest.raises(grpc.RpcError) as info:
            stub.ListJobs(tuning_service_pb2.ListJobsRequest(page_token="not-a-token"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for job_id in ids:
        client.cancel(job_id)


def test_a_warm_worker_is_kept_for_the_next_job_but_never_beside_a_lone_running_job(server, client, data):
    def workers() -> list[int]:
        return training_workers(server.settings.data_dir)

    warm = wait_for(workers, timeout=30)  # started with the server
    assert len(warm) == 1
    # in an empty folder: a library resolving a bare name against the current directory finds nothing
    assert os.readlink(f"/proc/{warm[0]}/cwd") == str(server.settings.worker_cwd)
    # lowered below the control plane (training_niceness, default 10)
    assert server.settings.training_niceness == 10
    wait_for(lambda: int(Path(f"/proc/{warm[0]}/stat").read_text().rsplit(")", 1)[1].split()[16]) == 10, timeout=10)
    first = client.submit(classification_spec(max_steps=100_000, logging_steps=1))
    wait_for(lambda: client.get(first.id).last_seq >= 3 or None, timeout=60)  # training on the warm worker
    time.sleep(1.0)  # a replacement would have been started when the job took the worker
    assert workers() == warm, "a second worker was started while a job ran with nothing queued"

    second = client.submit(classification_spec())  # queued behind the running job: its worker starts now
    pair = wait_for(lambda: (w if len(w := workers()) == 2 else None), timeout=30)
    assert warm[0] in pair
    client.cancel(first.id)
    assert client.wait(second.id).state == JobState.SUCCEEDED
    # each job ended with a worker started for the next one; exactly one is left
    assert wait_for(lambda: len(workers()) == 1 or None, timeout=30)
    assert warm[0] not in workers()


def test_stream_metrics_sends_batches_only_to_clients_that_ask(server, client, data):
    job = client.submit(classification_spec(max_steps=6, logging_steps=1))
    assert client.wait(job.id).state == JobState.SUCCEEDED
    with grpc.insecure_channel(server.address) as channel:
        stub = tuning_service_pb2_grpc.TuningServiceStub(channel)
        single = list(stub.StreamMetrics(tuning_service_pb2.StreamMetricsRequest(job_id=job.id)))
        batched = list(stub.StreamMetrics(tuning_service_pb2.StreamMetricsRequest(job_id=job.id, max_batch=4)))
    assert all(r.HasField("event") and not r.events for r in single)  # an old client's view: unchanged
    assert all(not r.HasField("event") and 1 <= len(r.events) <= 4 for r in batched)
    assert [e for r in batched for e in r.events] == [r.event for r in single]
    assert len(batched) == -(-len(single) // 4)  # a finished job replays from the store: full batches
    # the SDK asks for batches and yields every event once, in order
    assert [e.seq for e in client.stream_metrics(job.id)] == list(range(1, len(single) + 1))
    assert [e.seq for e in client.stream_metrics(job.id, after_seq=3)] == list(range(4, len(single) + 1))
