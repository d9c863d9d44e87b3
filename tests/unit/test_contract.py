"""The committed stubs are exactly what `make proto` generates from protos/."""

import filecmp
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "client" / "tunewire" / "v1"


def _generate(out: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(out)


def test_committed_stubs_are_not_stale(tmp_path):
    _generate(tmp_path)
    fresh = tmp_path / "tunewire" / "v1"
    generated = sorted(p.name for p in fresh.iterdir() if p.is_file())
    committed = sorted(p.name for p in COMMITTED.iterdir() if p.is_file() and p.name != "__init__.py")
    assert generated == committed, "generated files differ from client/tunewire/v1: run `make proto`"
    stale = [name for name in generated if not filecmp.cmp(fresh / name, COMMITTED / name, shallow=False)]
    assert not stale, f"stale stubs {stale}: run `make proto` and commit the result"


def test_every_rpc_has_its_own_request_and_response():
    from tunewire.v1 import tuning_service_pb2

    service = tuning_service_pb2.DESCRIPTOR.services_by_name["TuningService"]
    assert {m.name for m in service.methods} >= {
        "SubmitJob", "GetJob", "ListJobs", "CancelJob", "StreamMetrics", "Predict", "PredictStream",
        "StartUpload", "UploadDataset", "ListDatasets", "GetDataset", "DeleteDataset"}
    for method in service.methods:
        assert method.input_type.name == f"{method.name}Request"
        assert method.output_type.name == f"{method.name}Response"


def test_uploads_stream_from_the_client_and_a_job_names_an_uploaded_dataset():
    from tunewire.v1 import job_pb2, tuning_service_pb2

    methods = tuning_service_pb2.DESCRIPTOR.services_by_name["TuningService"].methods_by_name
    upload = methods["UploadDataset"]
    assert upload.client_streaming and not upload.server_streaming
    assert not methods["StartUpload"].client_streaming
    source = job_pb2.Dataset.DESCRIPTOR.oneofs_by_name["source"]
    assert [f.name for f in source.fields] == ["hub", "file", "inline", "uploaded"]
    assert job_pb2.Dataset.DESCRIPTOR.fields_by_name["uploaded"].number == 5  # max_samples keeps 4
