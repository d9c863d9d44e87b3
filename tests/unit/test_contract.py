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
        "SubmitJob", "GetJob", "ListJobs", "CancelJob", "StreamMetrics", "Predict", "PredictStream"}
    for method in service.methods:
        assert method.input_type.name == f"{method.name}Request"
        assert method.output_type.name == f"{method.name}Response"
