"""The SDK on its own: spec files, rich error decoding, and no heavy imports."""

import subprocess
import sys

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

import tunewire
from tunewire.errors import field_violations, from_rpc_error
from tunewire.v1 import job_pb2


def test_importing_the_sdk_never_imports_torch():
    code = "import tunewire, tunewire.cli, sys; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_control_plane_never_imports_torch():
    code = ("import sys, tunewire_server.api.server, tunewire_server.jobs.manager, tunewire_server.validation; "
            "bad = {m for m in ('torch', 'transformers', 'datasets', 'trl', 'peft') if m in sys.modules}; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rich_error_details_decode_with_the_google_rpc_messages():
    bad = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field="base_model", description="is required")])
    detail = any_pb2.Any()
    detail.Pack(bad)
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="bad", details=[detail])
    violations = field_violations([("grpc-status-details-bin", status.SerializeToString())])
    assert violations == (tunewire.FieldViolation("base_model", "is required"),)


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return ()


@pytest.mark.parametrize("code, cls", [
    (grpc.StatusCode.NOT_FOUND, tunewire.NotFoundError),
    (grpc.StatusCode.INVALID_ARGUMENT, tunewire.InvalidArgumentError),
    (grpc.StatusCode.FAILED_PRECONDITION, tunewire.FailedPreconditionError),
    (grpc.StatusCode.UNAVAILABLE, tunewire.UnavailableError),
    (grpc.StatusCode.INTERNAL, tunewire.TunewireError),
])
def test_rpc_errors_become_sdk_exceptions(code, cls):
    exc = from_rpc_error(_FakeRpcError(code, "details here"))
    assert type(exc) is cls and exc.message == "details here" and exc.code == code


def test_spec_files(tmp_path):
    yaml_file = tmp_path / "job.yaml"
    yaml_file.write_text("base_model: m\nclassification: {label_names: [a, b]}\n"
                         "train_dataset: {file: {path: t.jsonl}}\nhyperparameters: {eval_strategy: steps, eval_steps: 5}\n")
    spec = tunewire.load_spec(yaml_file)
    assert spec.hyperparameters.eval_strategy == job_pb2.EVAL_STRATEGY_STEPS  # 'steps' expanded
    assert spec.hyperparameters.eval_steps == 5
    assert spec.HasField("classification") and list(spec.classification.label_names) == ["a", "b"]
    json_file = tmp_path / "job.json"
    json_file.write_text('{"base_model": "m", "sft": {"max_length": 64}}')
    assert tunewire.load_spec(json_file).sft.max_length == 64
    bad = tmp_path / "bad.yaml"
    bad.write_text("base_model: m\nepochs: 3\n")
    with pytest.raises(tunewire.SpecError, match="epochs"):
        tunewire.load_spec(bad)


def test_status_details_that_do_not_parse_leave_the_error_without_violations():
    """A corrupt grpc-status-details-bin must not escape as a protobuf DecodeError: the SDK still raises its
    own error for the status code, with no field violations."""
    from tunewire.errors import field_violations

    assert field_violations([("grpc-status-details-bin", b"\xff\xff\xff")]) == ()


def test_importing_the_contract_loads_neither_grpc_nor_the_client():
    code = ("import sys, tunewire.v1.job_pb2, tunewire.v1.tuning_service_pb2, tunewire_server.jobs.states\n"
            "print(sorted(m for m in ('grpc', 'tunewire.client', 'tunewire.aio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_sdk_names_load_on_first_use():
    code = ("import sys, tunewire\nassert 'grpc' not in sys.modules\n"
            "from tunewire import Client, AsyncClient, IntegrityError, JobState, load_spec, Checkpoints\n"
            "assert 'grpc' in sys.modules and Client.__module__ == 'tunewire.client'\n"
            "assert set(tunewire.__all__) <= set(dir(tunewire))\n"
            "try:\n    tunewire.NoSuchName\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit(1)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
