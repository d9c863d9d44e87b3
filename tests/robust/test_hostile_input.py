"""Hostile values against a real server (issue 12, items 1-4, 9a): each answered INVALID_ARGUMENT (or
NOT_FOUND) with the field named and a short message, never INTERNAL or RESOURCE_EXHAUSTED, and nothing
stored. Raw stubs, so no SDK-side check stands in for the server's."""

from __future__ import annotations

import math

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests import tiny
from tunewire.spec import spec_from_dict
from tunewire.v1 import tuning_service_pb2 as pb
from tunewire.v1 import tuning_service_pb2_grpc as pb_grpc

SPEC = {
    "base_model": "tiny-bert",
    "classification": {},
    "train_dataset": {"file": {"path": "train.jsonl"}},
    "hyperparameters": {"max_steps": 2, "save_strategy": "no", "per_device_train_batch_size": 4},
}
BIG = 1_000_000


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory, models_root):
    from tests.support.server_thread import ServerThread, make_settings

    settings = make_settings(tmp_path_factory.mktemp("hostile"), models_root)
    st = ServerThread(settings).start()
    tiny.write_jsonl(settings.dataset_root / "train.jsonl", tiny.sentiment_rows(16))
    yield st
    st.stop()


@pytest.fixture(scope="module")
def stub(hostile_server):
    # The client's defaults: 8 KiB of metadata at most, as grpcurl and the SDK have it.
    with grpc.insecure_channel(hostile_server.address, options=[("grpc.max_send_message_length", 64 * 1024**2)]) as ch:
        yield pb_grpc.TuningServiceStub(ch)


def _spec(**overrides):
    spec = spec_from_dict({**SPEC, **overrides})
    return spec


def refusal(call, request, code=grpc.StatusCode.INVALID_ARGUMENT) -> dict[str, str]:
    """The call's field violations, after checking its code and that the answer is small."""
    with pytest.raises(grpc.RpcError) as info:
        result = call(request, timeout=30)
        if hasattr(result, "__iter__"):
            list(result)
    err = info.value
    assert err.code() == code, (err.code(), err.details()[:200])
    assert len(err.details().encode()) < 1024
    status = rpc_status.from_call(err)
    found: dict[str, str] = {}
    if status is not None:
        for detail in status.details:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                found.update({v.field: v.description for v in bad.field_violations})
    return found


def _submit(stub, spec, request_id: str = ""):
    return pb.SubmitJobRequest(spec=spec, request_id=request_id)


def _jobs(stub) -> list:
    return list(stub.ListJobs(pb.ListJobsRequest(page_size=500), timeout=30).jobs)


# --- item 1 and 2: rows ----------------------------------------------------------------------------


@pytest.mark.parametrize("label", [1e300, 2e6, -1, 1.5])
def test_an_inline_label_is_checked_against_the_limit_first(stub, label):
    rows = [{"text": "good", "label": 0}, {"text": "bad", "label": 1}, {"text": "huge", "label": label}]
    spec = _spec(train_dataset={"inline": {"rows": rows}})
    problems = refusal(stub.SubmitJob, _submit(stub, spec))
    assert problems["train_dataset"].startswith("row 3: column 'label'")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_in_inline_rows_are_invalid_argument_not_internal(stub, value):
    spec = _spec(train_dataset={"inline": {"rows": [{"text": "a", "label": 0}, {"text": "b", "label": 1}]}})
    row = struct_pb2.Struct()
    row.update({"text": "c", "label": 0, "weight": value})
    spec.train_dataset.inline.rows.append(row)
    for request_id in ("", "same-key"):  # with a key, the server looks for the request before validating
        problems = refusal(stub.SubmitJob, _submit(stub, spec, request_id))
        assert "column 'weight'" in problems["train_dataset.inline.rows[2]"]


# --- item 3: strings -----------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, field", [
    ({"hyperparameters": {"lr_scheduler_type": "x" * 100_000}}, "hyperparameters.lr_scheduler_type"),
    ({"classification": {"text_field": "t" * BIG}}, "classification.text_field"),
    ({"display_name": "d" * 5 * BIG}, "display_name"),
    ({"train_dataset": {"file": {"path": "p/" * BIG}}}, "train_dataset.file.path"),
])
def test_long_strings_are_refused_not_echoed(stub, overrides, field):
    problems = refusal(stub.SubmitJob, _submit(stub, _spec(**overrides)))
    assert field in problems
    assert all(len(d) < 300 for d in problems.values())


@pytest.mark.parametrize("request_id", ["a\x00b", "x" * BIG, "two words"])
def test_odd_request_ids_are_refused(stub, request_id):
    assert "request_id" in refusal(stub.SubmitJob, _submit(stub, _spec(), request_id))


@pytest.mark.parametrize("job_id", ["j" * BIG, "job-\x00", "../../etc/passwd", "job id"])
def test_odd_job_ids_are_refused_in_every_call(stub, job_id):
    calls = [
        (stub.GetJob, pb.GetJobRequest(job_id=job_id)),
        (stub.CancelJob, pb.CancelJobRequest(job_id=job_id)),
        (stub.StreamMetrics, pb.StreamMetricsRequest(job_id=job_id)),
        (stub.Predict, pb.PredictRequest(job_id=job_id, inputs=["hello"])),
        (stub.PredictStream, pb.PredictStreamRequest(job_id=job_id, text="hello")),
    ]
    for call, request in calls:
        assert "job_id" in refusal(call, request)


def test_a_well_formed_unknown_job_id_is_not_found(stub):
    refusal(stub.GetJob, pb.GetJobRequest(job_id="job-" + "0" * 16), grpc.StatusCode.NOT_FOUND)


def test_a_long_page_token_is_refused(stub):
    assert "page_token" in refusal(stub.ListJobs, pb.ListJobsRequest(page_token="t" * BIG))


# --- item 4: enums and numbers -------------------------------------------------------------------


@pytest.mark.parametrize("overrides, field", [
    ({"hyperparameters": {**SPEC["hyperparameters"], "eval_strategy": 99}}, "hyperparameters.eval_strategy"),
    ({"hyperparameters": {**SPEC["hyperparameters"], "save_strategy": -5}}, "hyperparameters.save_strategy"),
    ({"hyperparameters": {**SPEC["hyperparameters"], "precision": 7}}, "hyperparameters.precision"),
    ({"train_dataset": {"file": {"path": "train.jsonl", "format": 42}}}, "train_dataset.file.format"),
    ({"max_retries": 2**32 - 1}, "max_retries"),
    ({"hyperparameters": {**SPEC["hyperparameters"], "seed": -(2**63)}}, "hyperparameters.seed"),
    ({"hyperparameters": {**SPEC["hyperparameters"], "seed": 2**63 - 1}}, "hyperparameters.seed"),
])
def test_out_of_range_values_are_refused_and_nothing_is_queued(stub, overrides, field):
    before = len(_jobs(stub))
    assert field in refusal(stub.SubmitJob, _submit(stub, _spec(**overrides)))
    assert len(_jobs(stub)) == before


# --- item 2: generation numbers, on a real finished job --------------------------------------------


def test_a_tiny_temperature_is_refused_at_predict(hostile_server, stub):
    import tunewire

    with tunewire.Client(hostile_server.address, timeout=60) as client:
        job = client.submit(SPEC)
        assert client.wait(job.id).state == tunewire.JobState.SUCCEEDED
    for generation in (pb.GenerationParams(do_sample=True, temperature=1e-300),
                       pb.GenerationParams(do_sample=True, temperature=math.nan)):
        request = pb.PredictRequest(job_id=job.id, inputs=["hello"], generation=generation)
        assert "generation.temperature" in refusal(stub.Predict, request)
    assert stub.Predict(pb.PredictRequest(job_id=job.id, inputs=["hello"]), timeout=60).predictions
