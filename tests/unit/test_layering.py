"""The architecture, checked from the source text (ast; nothing of the server is imported or run):

- the control plane (tunewire_server but worker/ and the metric scripts) has no import cycles;
- it never imports torch & co., directly or through any module it imports, and never the worker's code;
- grpc is imported in api/ and the SDK only, and business logic does not reach api/;
- the SDK never imports torch or tunewire_server;
- every module with logic has tests/unit/test_<name>.py, or an entry below naming the file that covers it.

What counts as an import (tests/support/imports.py): any import statement in the module, at module level or
inside a function (a lazy import runs when the function does, so it counts), but NOT one under
`if TYPE_CHECKING:`, which never runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.imports import ImportGraph, has_logic, imported_modules

REPO = Path(__file__).resolve().parents[2]

# ---- Edit here when modules move ---------------------------------------------------------------------------

# Modules with logic whose tests are not tests/unit/test_<name>.py: module -> the file (or folder) that really
# exercises it. Remove an entry once the module gets its own test_<name>.py (the check says so).
COVERED_ELSEWHERE: dict[str, str] = {
    # SDK: unit tests are named test_sdk_*.py
    "tunewire._requests": "tests/unit/test_sdk_core.py",  # request building and retries, with _core
    "tunewire.aio": "tests/unit/test_sdk_shells.py",  # the asyncio shell over _core
    "tunewire.client": "tests/unit/test_sdk_shells.py",  # the sync shell over _core
    "tunewire.cli": "tests/e2e/test_classification.py",  # the CLI run against a real server
    "tunewire.errors": "tests/unit/test_sdk.py",  # from_rpc_error, field_violations
    "tunewire.spec": "tests/unit/test_validation.py",  # spec_from_dict builds every spec the validation tests use
    "tunewire.types": "tests/unit/test_sdk_core.py",  # JobEvent.from_proto and the terminal states
    # api/: the gRPC edge, exercised through a real server
    "tunewire_server.api.convert": "tests/unit/test_convert_predictions.py",
    "tunewire_server.api.server": "tests/service/test_service.py",
    "tunewire_server.api.servicer": "tests/service/test_service.py",
    "tunewire_server.api.tls": "tests/robust/test_security.py",  # check_pem's messages, TLS and mutual TLS
    # openai_api/: the routes and the server, driven by the openai package against a real server
    "tunewire_server.openai_api.app": "tests/e2e/test_openai_http.py",
    "tunewire_server.openai_api.fine_tuning": "tests/e2e/test_openai_http.py",
    # control plane
    "tunewire_server.checkpoints": "tests/robust/test_checkpoint_integrity.py",  # its first five tests are unit tests
    "tunewire_server.observability": "tests/service/test_metrics.py",
    "tunewire_server.jobs.manager": "tests/unit/test_scheduler.py",  # the facade, driven with a fake launcher
    "tunewire_server.jobs.recorder": "tests/unit/test_scheduler.py",  # the scheduler stores events through it
    "tunewire_server.jobs.recovery": "tests/unit/test_scheduler.py",  # restarts and RESTART_ALLOWANCE
    "tunewire_server.jobs.transitions": "tests/unit/test_scheduler.py",  # every state change the scheduler makes
    "tunewire_server.workers.launcher": "tests/unit/test_scheduler.py",  # the seam: the fake launcher implements it
    "tunewire_server.models.layout": "tests/unit/test_models_manifest.py",  # Which/Form and the folder names
    "tunewire_server.models.selection": "tests/unit/test_models_manifest.py",  # which folder a download reads
    "tunewire_server.models.service": "tests/e2e/test_download_equivalence.py",  # the facade over models/
    "tunewire_server.models.verified": "tests/unit/test_models_merge.py",  # the marker-check cache
    "tunewire_server.store.base": "tests/unit/test_store.py",  # the Store protocol's contract suite
    "tunewire_server.workers.inference": "tests/service/test_metrics.py",  # a real Predict through the server
    "tunewire_server.workers.process": "tests/unit/test_worker_env.py",
    # validation/: one file per task or theme
    "tunewire_server.validation.classification": "tests/unit/test_validation.py",
    "tunewire_server.validation.common": "tests/unit/test_validation.py",
    "tunewire_server.validation.generation": "tests/unit/test_sft_validation.py",
    "tunewire_server.validation.hyperparameters": "tests/unit/test_validation.py",
    "tunewire_server.validation.model": "tests/unit/test_validation.py",
    "tunewire_server.validation.sft": "tests/unit/test_sft_validation.py",
    "tunewire_server.validation.sources": "tests/unit/test_validation.py",
    "tunewire_server.validation.spec": "tests/unit/test_validation.py",
    # worker/: the child's code, run in-process by the worker tests
    "tunewire_server.worker.protocol": "tests/unit/test_worker_signals.py",  # the real worker entry's messages
    "tunewire_server.worker.runtime": "tests/unit/test_sft_worker.py",
    "tunewire_server.worker.inference.generation": "tests/unit/test_sft_generation.py",
    "tunewire_server.worker.inference.turns": "tests/unit/test_sft_generation.py",
    "tunewire_server.worker.training.artifacts": "tests/unit/test_worker_errors.py",
    "tunewire_server.worker.training.classification": "tests/unit/test_worker_errors.py",
    "tunewire_server.worker.training.data": "tests/robust/test_special_files.py",
    "tunewire_server.worker.training.failures": "tests/unit/test_worker_errors.py",
    "tunewire_server.worker.training.launcher": "tests/e2e/test_multiprocess.py",
    "tunewire_server.worker.training.sft": "tests/unit/test_sft_worker.py",
    "tunewire_server.worker.training.trainer_args": "tests/unit/test_sft_worker.py",
    "tunewire_server.worker.merge.merging": "tests/unit/test_models_merge.py",  # the merge worker's code, in-process
    # the estimate worker's code, run by a real server's EstimateJob (counts checked against the data)
    "tunewire_server.worker.estimate.counts": "tests/service/test_estimate.py",
    "tunewire_server.worker.estimate.model": "tests/service/test_estimate.py",
    "tunewire_server.worker.estimate.probe": "tests/service/test_estimate.py",
}

# Imports of the worker's code by the control plane that are known and being removed: (importer, imported)
# -> why. Each is an xfail(strict=True) case below: once the import is gone it passes, the run fails, and the
# entry must be deleted here.
KNOWN_WORKER_IMPORTS: dict[tuple[str, str], str] = {
}

# ---- The rules ---------------------------------------------------------------------------------------------

SERVER, SDK = "tunewire_server", "tunewire"
# The training stack: worker/ only. (pyarrow is fine: the control plane reads Parquet rows without torch.)
ML_LIBRARIES = {"torch", "transformers", "trl", "peft", "datasets", "accelerate", "evaluate", "sklearn",
                "safetensors", "tokenizers"}
GRPC = {"grpc", "grpc_status", "grpc_health", "grpc_reflection"}
SDK_TEST_PREFIX = "sdk"  # tests of client/tunewire/x.py are tests/unit/test_sdk_x.py


def in_server(m: str) -> bool:
    return m == SERVER or m.startswith(SERVER + ".")


def in_sdk(m: str) -> bool:
    return m == SDK or m.startswith(SDK + ".")


def worker_side(m: str) -> bool:
    """The child's code: worker/."""
    return m.startswith(f"{SERVER}.worker.") or m == f"{SERVER}.worker"


def control_plane(m: str) -> bool:
    return in_server(m) and not worker_side(m)


def at_the_edge(m: str) -> bool:
    """Where grpc may be imported: api/ (__main__ does not need it: it imports api.server lazily)."""
    return m.startswith(f"{SERVER}.api.") or m == f"{SERVER}.api"


def cycle_problems(graph: ImportGraph) -> list[str]:
    return [" -> ".join(c) for c in graph.cycles(control_plane)]


def ml_problems(graph: ImportGraph, known=()) -> list[str]:
    """Control-plane modules that import an ML library, with the chain of imports that gets there. The `known`
    worker imports are not followed (their consequence is part of the known case)."""
    skip = known_edges(known)
    out = []
    for m in sorted(filter(control_plane, graph.modules)):
        for target, chain in sorted(graph.reach(m, skip=skip).items()):
            if target in ML_LIBRARIES:
                out.append(" -> ".join(chain))
    return out


def known_edges(known) -> set[tuple[str, str]]:
    """The edges of the known imports, with the packages above each target: `import a.b.c` runs a/__init__
    and a/b/__init__ too."""
    out = set()
    for importer, target in known:
        parts = target.split(".")
        out |= {(importer, ".".join(parts[:i])) for i in range(1, len(parts) + 1)}
    return out


def worker_import_problems(graph: ImportGraph, known=()) -> list[tuple[str, str]]:
    """(control-plane module, worker-side module) it imports directly; any path into the worker's code starts
    with one of these, so the direct edges are the whole story."""
    skip = known_edges(known)
    return sorted((m, d) for m in graph.modules if control_plane(m)
                  for d in graph.edges(m, with_parents=True) if worker_side(d) and (m, d) not in skip)


def grpc_problems(graph: ImportGraph) -> list[str]:
    """Server modules outside api/ that import grpc, and server modules outside api/ and __main__ that import
    api/ (through any chain of server modules). The SDK package itself is not walked: its __init__ imports
    grpc, and the server takes the contract (tunewire.v1, tunewire.types) from it."""
    out = [f"{m} imports {', '.join(sorted(graph.modules[m].external & GRPC))}"
           for m in sorted(graph.modules) if in_server(m) and not at_the_edge(m) and graph.modules[m].external & GRPC]
    for m in sorted(graph.modules):
        if not in_server(m) or at_the_edge(m) or m == f"{SERVER}.__main__":
            continue
        for target, chain in sorted(graph.reach(m, follow=in_server).items()):
            if at_the_edge(target):
                out.append(" -> ".join(chain))
                break
    return out


def sdk_problems(graph: ImportGraph) -> list[str]:
    out = []
    for m in sorted(filter(in_sdk, graph.modules)):
        for target, chain in sorted(graph.reach(m).items()):
            if target in ML_LIBRARIES or in_server(target) or target == SERVER:
                out.append(" -> ".join(chain))
    return out


def needs_tests(graph: ImportGraph, name: str) -> bool:
    """A module with logic (tests/support/imports.py: has_logic) that is not a package __init__, an entry
    point (__main__, a worker's main.py) or generated (*_pb2*)."""
    mod = graph.modules[name]
    last = name.rsplit(".", 1)[-1]
    return (not mod.is_package and last != "__main__" and "_pb2" not in last
            and not (worker_side(name) and last == "main") and has_logic(mod.tree))


def unit_test_names(name: str) -> list[str]:
    """The unit test files that may count for `name`: test_<name>.py or test_<package>_<name>.py (any depth)
    for a server module, test_sdk_<name>.py for an SDK module (leading underscores dropped)."""
    rel = [p.lstrip("_") for p in name.split(".")[1:]]
    if in_sdk(name):
        return [f"test_{SDK_TEST_PREFIX}_{'_'.join(rel)}.py"]
    return [f"test_{'_'.join(rel[i:])}.py" for i in range(len(rel) - 1, -1, -1)]


def mirror_problems(graph: ImportGraph, unit_tests: dict[str, set[str]], covered: dict[str, str],
                    repo: Path) -> list[str]:
    """What is missing or stale in the tests/unit mirror of the modules. `unit_tests`: file name -> the modules
    it imports. A test file counts for a module when its name fits (unit_test_names); a name that fits several
    modules (test_listing.py: jobs/listing.py, models/listing.py) counts only for those it imports. A
    COVERED_ELSEWHERE entry must name a file or folder that exists."""
    modules = sorted(m for m in graph.modules if needs_tests(graph, m))
    fits: dict[str, int] = {}
    for m in modules:
        for n in unit_test_names(m):
            fits[n] = fits.get(n, 0) + 1
    out = []
    for m in modules:
        names = unit_test_names(m)
        own = [n for n in names if n in unit_tests and (fits[n] == 1 or m in unit_tests[n])]
        if m in covered:
            if own:
                out.append(f"{m}: has tests/unit/{own[0]}; remove its COVERED_ELSEWHERE entry")
            elif not (repo / covered[m]).exists():
                out.append(f"{m}: COVERED_ELSEWHERE names {covered[m]}, which does not exist")
        elif not own:
            shared = [n for n in names if fits[n] > 1]
            note = f" ({', '.join(shared)} would have to import it: the name fits several modules)" if shared else ""
            out.append(f"{m} ({graph.modules[m].path.relative_to(repo)}): no tests/unit/{' or '.join(names)}{note}, "
                       "and no COVERED_ELSEWHERE entry")
    out += [f"{m}: COVERED_ELSEWHERE entry for a module that is gone or has no logic" for m in covered
            if m not in modules]
    return out


# ---- The checks on this repository ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return ImportGraph.of(REPO / "server" / SERVER, REPO / "client" / SDK)


def test_the_control_plane_has_no_import_cycles(graph):
    problems = cycle_problems(graph)
    assert not problems, "import cycles in the control plane:\n  " + "\n  ".join(problems)


def test_the_control_plane_never_imports_ml_libraries_even_indirectly(graph):
    problems = ml_problems(graph, KNOWN_WORKER_IMPORTS)
    assert not problems, ("the control plane imports an ML library (only worker/ may):\n  "
                          + "\n  ".join(problems))


def test_the_control_plane_never_imports_the_workers_code(graph):
    problems = [f"{m} imports {d}" for m, d in worker_import_problems(graph, KNOWN_WORKER_IMPORTS)]
    assert not problems, ("the control plane imports worker-side modules (the child's code):\n  "
                          + "\n  ".join(problems))


@pytest.mark.parametrize("importer,imported", [
    pytest.param(*key, marks=pytest.mark.xfail(strict=True, reason=reason), id=f"{key[0]}->{key[1]}")
    for key, reason in KNOWN_WORKER_IMPORTS.items()])
def test_known_worker_imports_are_gone(graph, importer, imported):
    """Fails (xfail) while the known import is there; once removed, XPASS fails the run: delete the entry."""
    assert (importer, imported) not in worker_import_problems(graph)


def test_grpc_stays_in_the_api_package(graph):
    problems = grpc_problems(graph)
    assert not problems, "grpc outside server/tunewire_server/api/:\n  " + "\n  ".join(problems)


def test_the_sdk_never_imports_torch_or_the_server(graph):
    problems = sdk_problems(graph)
    assert not problems, "the SDK (client/tunewire) imports:\n  " + "\n  ".join(problems)


def test_every_module_with_logic_has_unit_tests(graph):
    unit_tests = {p.name: imported_modules(p) for p in (REPO / "tests" / "unit").glob("test_*.py")}
    problems = mirror_problems(graph, unit_tests, COVERED_ELSEWHERE, REPO)
    assert not problems, ("tests/unit does not mirror the modules (add the test file, or an entry in "
                          "COVERED_ELSEWHERE at the top of tests/unit/test_layering.py):\n  " + "\n  ".join(problems))


# ---- The checker, on small synthetic packages: each check can fail -----------------------------------------

def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def synthetic(tmp_path: Path, server: dict[str, str], sdk: dict[str, str] | None = None) -> ImportGraph:
    base = {"__init__.py": "", "api/__init__.py": "", "worker/__init__.py": ""}
    write(tmp_path / "server" / SERVER, base | server)
    write(tmp_path / "client" / SDK, {"__init__.py": ""} | (sdk or {}))
    return ImportGraph.of(tmp_path / "server" / SERVER, tmp_path / "client" / SDK)


def test_the_checker_finds_a_cycle_through_a_lazy_relative_import(tmp_path):
    graph = synthetic(tmp_path, {
        "a.py": "from tunewire_server import b\n",
        "b.py": "def f():\n    from .a import x\n",
    })
    assert cycle_problems(graph) == ["tunewire_server.a -> tunewire_server.b -> tunewire_server.a"]


def test_the_checker_ignores_type_checking_imports_and_the_worker_in_cycles(tmp_path):
    graph = synthetic(tmp_path, {
        "a.py": "from tunewire_server import b\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tunewire_server import a\n",
        "worker/c.py": "from tunewire_server.worker import d\n",
        "worker/d.py": "from tunewire_server.worker import c\n",
    })
    assert cycle_problems(graph) == []


def test_the_checker_finds_torch_through_a_helper_module(tmp_path):
    graph = synthetic(tmp_path, {
        "jobs.py": "from tunewire_server.helper import go\n",
        "helper.py": "def go():\n    import torch.nn\n",
        "worker/train.py": "import transformers\n",  # the worker may
    })
    assert ml_problems(graph) == [
        "tunewire_server.helper -> torch",
        "tunewire_server.jobs -> tunewire_server.helper -> torch",
    ]


def test_the_checker_finds_torch_through_a_package_init(tmp_path):
    # `from tunewire_server.pkg.leaf import x` runs pkg/__init__.py first
    graph = synthetic(tmp_path, {
        "pkg/__init__.py": "import accelerate\n",
        "pkg/leaf.py": "X = 1\n",
        "jobs.py": "from tunewire_server.pkg.leaf import X\n",
    })
    assert "tunewire_server.jobs -> tunewire_server.pkg -> accelerate" in ml_problems(graph)


def test_the_checker_finds_imports_of_the_worker_and_honours_the_known_ones(tmp_path):
    graph = synthetic(tmp_path, {
        "jobs.py": "def f():\n    from tunewire_server.worker.paths import MODEL_DIR\n",
        "worker/paths.py": "MODEL_DIR = 'model'\n",
    })
    assert worker_import_problems(graph) == [("tunewire_server.jobs", "tunewire_server.worker"),
                                             ("tunewire_server.jobs", "tunewire_server.worker.paths")]
    assert worker_import_problems(graph, {("tunewire_server.jobs", "tunewire_server.worker.paths"): ""}) == []


def test_a_known_worker_import_hides_only_its_own_torch(tmp_path):
    graph = synthetic(tmp_path, {
        "jobs.py": "from tunewire_server.worker.paths import MODEL_DIR\nfrom tunewire_server import other\n",
        "other.py": "import torch\n",
        "worker/paths.py": "import transformers\nMODEL_DIR = 'model'\n",
    })
    known = {("tunewire_server.jobs", "tunewire_server.worker.paths"): ""}
    assert "tunewire_server.jobs -> tunewire_server.worker.paths -> transformers" in ml_problems(graph)
    assert ml_problems(graph, known) == ["tunewire_server.jobs -> tunewire_server.other -> torch",
                                         "tunewire_server.other -> torch"]


def test_the_checker_finds_grpc_outside_api_directly_and_through_api(tmp_path):
    graph = synthetic(tmp_path, {
        "api/status.py": "import grpc\n",  # allowed
        "jobs.py": "from grpc_status import rpc_status\n",
        "store.py": "from tunewire_server.api import status\n",
    })
    assert grpc_problems(graph) == [
        "tunewire_server.jobs imports grpc_status",
        "tunewire_server.store -> tunewire_server.api",
    ]


def test_the_checker_finds_the_sdk_importing_the_server_or_torch(tmp_path):
    graph = synthetic(tmp_path, {"errors.py": "X = 1\n"}, sdk={
        "client.py": "from tunewire import helper\n",
        "helper.py": "import torch\nfrom tunewire_server.errors import X\n",
    })
    problems = sdk_problems(graph)
    assert "tunewire.client -> tunewire.helper -> torch" in problems
    assert "tunewire.helper -> tunewire_server.errors" in problems


def test_the_checker_lists_modules_with_logic_that_have_no_tests(tmp_path):
    graph = synthetic(tmp_path, {
        "consts.py": "X = 1\nfrom tunewire_server.logic import f\n",  # constants and re-exports
        "shape.py": "import dataclasses\n@dataclasses.dataclass\nclass S:\n    x: int\n",  # a data shape
        "logic.py": "def f():\n    return 1\n",
        "other.py": "class C:\n    def m(self):\n        pass\n",
        "worker/main.py": "def main():\n    pass\n",  # an entry point
        "worker/sft.py": "def f():\n    pass\n",
        "validation/__init__.py": "",
        "validation/sft.py": "def f():\n    pass\n",
    }, sdk={"_core.py": "def f():\n    pass\n"})
    (tmp_path / "tests").mkdir()
    covered = {"tunewire_server.other": "tests/test_other_things.py", "tunewire_server.gone": "tests/x.py"}
    unit = {"test_sft.py": {"tunewire_server.worker.sft"}, "test_logic.py": set(), "test_core.py": set()}
    problems = mirror_problems(graph, unit, covered, tmp_path)
    assert [p.split(" ")[0].rstrip(":") for p in problems] == [
        "tunewire._core", "tunewire_server.other", "tunewire_server.validation.sft", "tunewire_server.gone"]
    assert "no tests/unit/test_sdk_core.py," in problems[0]  # test_core.py is not the SDK's
    assert "tests/test_other_things.py, which does not exist" in problems[1]
    # test_sft.py fits both sft modules: it counts for the one it imports (worker/sft.py) only
    assert "no tests/unit/test_sft.py or test_validation_sft.py (test_sft.py would have to import it" in problems[2]

    (tmp_path / "tests" / "test_other_things.py").write_text("")
    unit = {"test_sdk_core.py": set(), "test_validation_sft.py": set(), "test_worker_sft.py": set(),
            "test_logic.py": set(), "test_other.py": set()}
    assert mirror_problems(graph, unit, covered, tmp_path) == [
        "tunewire_server.other: has tests/unit/test_other.py; remove its COVERED_ELSEWHERE entry",
        "tunewire_server.gone: COVERED_ELSEWHERE entry for a module that is gone or has no logic"]


def test_the_checker_reads_what_a_test_file_imports(tmp_path):
    path = write(tmp_path, {"test_x.py": (
        "import tunewire\nfrom tunewire_server.validation import paths, validate\n"
        "def test():\n    from tunewire_server.api import status\n")})/"test_x.py"
    assert imported_modules(path) >= {"tunewire", "tunewire_server.validation.paths", "tunewire_server.api.status"}
