"""Fuzz SubmitJob on a real server: every answer is a deliberate status, never UNKNOWN or INTERNAL."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import tiny
from tests.conftest import ServerThread, make_settings
from tunewire.v1 import job_pb2
from tunewire.v1 import tuning_service_pb2 as pb
from tunewire.v1 import tuning_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow

ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
           grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.NOT_FOUND}

texts = st.one_of(st.sampled_from(["", "text", "label", "review", "../x", "%2e%2e", "/etc/passwd", "a" * 300]),
                  st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
numbers = st.one_of(st.sampled_from([0.0, -1.0, 1e-5, 0.5, 1.0, 1e30, float("nan"), float("inf")]),
                    st.floats(allow_nan=True, allow_infinity=True))
small = st.integers(min_value=0, max_value=2**32 - 1)
paths = st.one_of(st.sampled_from(["train.jsonl", "missing.jsonl", "../train.jsonl", "bad.jsonl", "train.csv",
                                   "dir/", "", "train.jsonl\x00", "link.jsonl", "%2e%2e%2ftrain.jsonl"]), texts)
rows = st.lists(st.dictionaries(st.sampled_from(["text", "label", "other"]),
                                st.one_of(texts, st.integers(-3, 5), st.booleans(), st.none()), max_size=3),
                max_size=6)


def _dataset():
    return st.one_of(
        st.builds(lambda p, n, f: {"file": {"path": p, "format": f}, "max_samples": n}, paths, small,
                  st.sampled_from(list(job_pb2.FileFormat.keys()))),
        st.builds(lambda name, split: {"hub": {"name": name, "split": split}}, texts, texts),
        st.builds(lambda r: {"inline": {"rows": r}}, rows),
        st.just({}),
    )


def _hyperparameters():
    return st.fixed_dictionaries({}, optional={
        "num_train_epochs": numbers, "max_steps": small, "learning_rate": numbers,
        "per_device_train_batch_size": small, "gradient_accumulation_steps": small, "warmup_ratio": numbers,
        "weight_decay": numbers, "lr_scheduler_type": texts, "seed": st.integers(-(2**63), 2**63 - 1),
        "eval_strategy": st.sampled_from(list(job_pb2.EvalStrategy.keys())), "eval_steps": small,
        "save_strategy": st.sampled_from(list(job_pb2.SaveStrategy.keys())), "logging_steps": small,
        "eval_on_start": st.booleans(), "precision": st.sampled_from(list(job_pb2.Precision.keys())),
    })


def _task():
    classification = st.fixed_dictionaries({}, optional={
        "text_field": texts, "label_field": texts, "label_names": st.lists(texts, max_size=4),
        "max_length": small, "pad_to_max_length": st.booleans(), "text_pair_field": texts})
    sft = st.fixed_dictionaries({}, optional={
        "text_field": texts, "max_length": small, "formatting_template": texts, "prompt_field": texts,
        "completion_field": texts, "messages_field": texts, "packing": st.booleans(),
        "neftune_noise_alpha": numbers, "chat_template_source": texts, "assistant_only_loss": st.booleans(),
        "model_dtype": st.sampled_from(list(job_pb2.ModelDtype.keys())), "response_template": texts})
    return st.one_of(st.builds(lambda c: {"classification": c}, classification),
                     st.builds(lambda s: {"sft": s}, sft), st.just({}))


specs = st.builds(
    lambda base, task, train, evals, hp, lora, retries: {
        "base_model": base, **task, "train_dataset": train, "eval_dataset": evals, "hyperparameters": hp,
        **({"lora": lora} if lora is not None else {}), "max_retries": retries},
    st.one_of(st.sampled_from(["tiny-bert", "tiny-bert/", "org/model", "../tiny-bert", ""]), texts),
    _task(), _dataset(), _dataset(), _hyperparameters(),
    st.one_of(st.none(), st.fixed_dictionaries({"r": small}, optional={
        "alpha": numbers, "dropout": numbers, "target_modules": st.lists(texts, max_size=3)})),
    st.integers(0, 3),
)


@pytest.fixture(scope="module")
def stub(tmp_path_factory, models_root):
    data_dir = tmp_path_factory.mktemp("fuzz")
    # Server limits keep whatever valid jobs the fuzzer finds tiny; a short queue keeps them few.
    server = ServerThread(make_settings(data_dir, models_root, max_queued_jobs=3, max_steps=3, max_epochs=1,
                                        max_inline_rows=50, warm_worker=False)).start()
    root = server.settings.dataset_root
    tiny.write_jsonl(root / "train.jsonl", tiny.sentiment_rows(8))
    (root / "bad.jsonl").write_bytes(b'{"text": "\xff"}\n{')
    (root / "train.csv").write_text("text,label\nhello,a\nbye,b\n")
    channel = grpc.insecure_channel(server.address)
    yield pb_grpc.TuningServiceStub(channel), channel
    for job in pb_grpc.TuningServiceStub(channel).ListJobs(pb.ListJobsRequest(page_size=500)).jobs:
        pb_grpc.TuningServiceStub(channel).CancelJob(pb.CancelJobRequest(job_id=job.id))
    channel.close()
    server.stop()


def _json_floats(value):
    """Protobuf JSON spells non-finite floats as strings."""
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, dict):
        return {k: _json_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_floats(v) for v in value]
    return value


def _code(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(spec=specs, request_id=st.one_of(st.just(""), st.text(max_size=200)))
def test_generated_specs_get_deliberate_answers(stub, spec, request_id):
    client, _ = stub
    message = json_format.ParseDict(_json_floats(spec), job_pb2.JobSpec())  # every generated spec is sent
    code = _code(lambda: client.SubmitJob(pb.SubmitJobRequest(spec=message, request_id=request_id), timeout=30))
    assert code in ALLOWED, (code, spec)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(payload=st.binary(max_size=512), method=st.sampled_from(
    ["SubmitJob", "GetJob", "ListJobs", "CancelJob", "Predict"]))
def test_garbage_bytes_are_invalid_argument_not_internal(stub, payload, method):
    _, channel = stub
    call = channel.unary_unary(f"/tunewire.v1.TuningService/{method}")
    code = _code(lambda: call(payload, timeout=30))
    assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (method, payload)
    if method == "SubmitJob":
        assert code in ALLOWED


def test_known_garbage_is_refused_as_invalid_argument(stub):
    _, channel = stub
    call = channel.unary_unary("/tunewire.v1.TuningService/SubmitJob")
    with pytest.raises(grpc.RpcError) as info:
        call(b"\xff\xff\xff\xff\x0f", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request" in info.value.details()
