"""Fuzz every request on a real server process: one field of a valid request mutated per example.

Each answer is a deliberate status (OK, INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, RESOURCE_EXHAUSTED),
never UNKNOWN or INTERNAL, with a message under 1 KB and small trailing metadata; where the mutation decides
the answer (a non-finite number, an out-of-range enum, a too-long string, a NUL in a name: INVALID_ARGUMENT
naming the field; an in-range value: OK), it is that answer; and the control plane's peak RSS stays under
a bound across the run. TUNEWIRE_FUZZ_EXAMPLES sets the examples per request kind (default 30).
"""

from __future__ import annotations

import os

import grpc
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.robust.fuzz_cases import RSS_BOUND, cases, run_example
from tests.robust.fuzz_protos import LEAF_MESSAGES, Mutation, mutations, request_types, slots
from tests.robust.fuzz_server import FuzzServer
from tunewire.v1 import job_pb2

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("TUNEWIRE_FUZZ_EXAMPLES", "30"))
CASES = ["SubmitJob/classification", "SubmitJob/inline", "SubmitJob/sft", "GetJob", "ListJobs", "CancelJob",
         "StreamMetrics", "Predict/classification", "Predict/sft", "PredictStream/sft",
         "StartUpload", "UploadDataset", "ListDatasets", "GetDataset", "DeleteDataset",
         "ListCheckpoints", "DownloadModel", "DeleteJob"]
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                database=None, phases=[Phase.explicit, Phase.generate])  # no shrinking: one field per example


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    server = FuzzServer(tmp_path_factory.mktemp("fuzz"))
    try:
        server.prepare()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def fuzz_cases(fuzz_server):
    return cases(fuzz_server)


def test_every_field_of_every_request_message_is_fuzzed():
    """The walk reaches every field of every request message, sub-messages and oneof branches included."""
    reachable, todo = set(), [t.DESCRIPTOR for t in request_types().values()]
    while todo:
        desc = todo.pop()
        for fd in desc.fields:
            if fd.full_name in reachable:
                continue
            reachable.add(fd.full_name)
            if fd.message_type is not None and fd.message_type.full_name not in LEAF_MESSAGES \
                    and not fd.message_type.GetOptions().map_entry:  # a map is one slot: its entries are fuzzed
                todo.append(fd.message_type)
    walked = {s.field.full_name for t in request_types().values() for s in slots(t())}
    containers = {f for f in reachable if f not in walked}
    assert all(_is_message(f) for f in containers), sorted(containers)
    assert {"tunewire.v1.SftTask.completion_only_loss", "tunewire.v1.InlineDataset.rows",
            "tunewire.v1.ChatMessage.content", "tunewire.v1.ListJobsRequest.states",
            "tunewire.v1.PredictStreamRequest.text", "tunewire.v1.LoraConfig.bias",
            "tunewire.v1.UploadChunk.data", "tunewire.v1.UploadHeader.sha256",
            "tunewire.v1.UploadedDatasetSource.dataset_id", "tunewire.v1.DownloadModelRequest.offsets",
            "tunewire.v1.DownloadModelRequest.checkpoint_step", "tunewire.v1.DeleteJobRequest.job_id"} <= walked


def _is_message(full_name: str) -> bool:
    from google.protobuf import descriptor_pool

    fd = descriptor_pool.Default().FindFieldByName(full_name)
    return fd.type == fd.TYPE_MESSAGE and fd.message_type.full_name not in LEAF_MESSAGES


@pytest.mark.parametrize("name", CASES)
def test_one_field_mutated_gets_the_answer_it_deserves(fuzz_server, fuzz_cases, name):
    case = fuzz_cases[name]

    @FUZZ
    @given(mutation=mutations(case.base, case.harmless, case.focus))
    def fuzz(mutation: Mutation):
        outcome = run_example(fuzz_server, case, mutation)
        assert not outcome.problems, f"{case.method} {mutation.describe()}: {outcome.problems}"

    fuzz()
    assert fuzz_server.queue_is_held()  # no accepted job ran


def test_the_control_plane_memory_stays_bounded(fuzz_server):
    """Runs after the fuzz tests above: the peak over all of them."""
    peak = fuzz_server.peak_rss()
    print(f"control-plane peak RSS under the fuzzer: {peak / 2**20:.0f} MiB")
    assert 0 < peak < RSS_BOUND


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
@given(payload=st.binary(max_size=512), method=st.sampled_from(sorted(request_types())))
def test_garbage_bytes_are_invalid_argument_not_internal(fuzz_server, payload, method):
    answer = fuzz_server.call(method, payload)
    assert answer.code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (method, payload)
    assert len(answer.message.encode()) < 1024
    fuzz_server.cancel_accepted(answer)


def test_known_garbage_is_refused_as_invalid_argument(fuzz_server):
    answer = fuzz_server.call("SubmitJob", b"\xff\xff\xff\xff\x0f")
    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "request" in answer.message


def test_the_queue_was_held_and_nothing_accepted_ran(fuzz_server):
    from tunewire.v1 import tuning_service_pb2 as pb

    assert fuzz_server.queue_is_held()
    jobs = fuzz_server.stub.ListJobs(pb.ListJobsRequest(page_size=500), timeout=30).jobs
    started = [j.id for j in jobs if j.HasField("start_time") and j.id not in fuzz_server.jobs.values()]
    assert started == []
    assert all(j.state != job_pb2.JOB_STATE_QUEUED for j in jobs)  # every accepted job was cancelled
