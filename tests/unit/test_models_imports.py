"""models/ is control plane: importing it loads no torch, transformers or peft, and no module of it imports grpc."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tunewire_server.models

MODELS = Path(tunewire_server.models.__file__).parent


def test_models_load_no_ml_library():
    modules = sorted(f"tunewire_server.models.{p.stem}" for p in MODELS.glob("*.py") if p.stem != "__init__")
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_no_models_module_imports_grpc():
    for path in MODELS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "grpc" or n.startswith("grpc.") for n in names), path.name


def test_the_inference_client_evicts_without_starting_a_worker(tmp_path):
    import asyncio

    from tests.support.server_thread import make_settings
    from tunewire_server.workers.inference import InferenceClient

    client = InferenceClient(make_settings(tmp_path, tmp_path))
    assert asyncio.run(client.evict(str(tmp_path / "jobs" / "j1"))) == 0
    assert client.pid is None
