"""The Dockerfile: hadolint-clean, and consistent with the server, the manifests and the build context.

No Docker engine runs here, so the image is not built; these checks read the Dockerfile and .dockerignore.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import PurePosixPath

import pytest

from tests.deploy.tools import (
    ALL_OVERLAYS,
    DOCKERFILE,
    ROOT,
    container_env,
    describe,
    dockerfile_instructions,
    key_values,
    only,
    render,
    run,
    server_container,
    stages,
    tool,
)


def test_hadolint_clean():
    proc = run(tool("hadolint"), "--failure-threshold", "warning", DOCKERFILE)
    assert proc.returncode == 0, describe(proc)


def test_hadolint_fails_a_bad_dockerfile(tmp_path):
    """The threshold is in force: an untagged base image and unpinned apt packages are warnings, so they fail."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get update && apt-get install -y curl\n")
    proc = run(tool("hadolint"), "--failure-threshold", "warning", bad)
    assert proc.returncode != 0, describe(proc)
    assert "DL3006" in proc.stdout and "DL3008" in proc.stdout, describe(proc)


@pytest.fixture(scope="module")
def instructions():
    return dockerfile_instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def build_stages(instructions):
    return stages(instructions)


@pytest.fixture(scope="module")
def final(build_stages):
    return build_stages[-1]


def _all(stage, keyword):
    return [i for i in stage if i.keyword == keyword]


def _env(stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in _all(stage, "ENV"):
        env.update(key_values(ins.args))
    return env


def _args(stage) -> dict[str, str]:
    args: dict[str, str] = {}
    for ins in _all(stage, "ARG"):
        args.update(key_values(ins.args))
    return args


def test_multi_stage_on_cuda(instructions, build_stages, final):
    assert len(build_stages) >= 2, "a builder stage keeps build tools and caches out of the image"
    base = final[0].args.split()[0]
    assert base.startswith("nvidia/cuda:"), base
    assert "AS runtime" in final[0].args
    installs = " ".join(i.args for stage in build_stages for i in _all(stage, "RUN"))
    assert '".[server]"' in installs, "the image installs tunewire[server] from the build context"
    args = _args(instructions)  # ARGs of every stage and the global ones before the first FROM
    major, minor, *_ = args["CUDA_VERSION"].split(".")
    assert major == "12", "a 12.x CUDA line runs on the drivers clusters have today (>= 525)"
    # torch wheels carry their own CUDA libraries; the base image's line should match them.
    assert args["TORCH_INDEX_URL"] == f"https://download.pytorch.org/whl/cu{major}{minor}", args["TORCH_INDEX_URL"]


def test_runs_as_the_pods_non_root_user(final):
    users = _all(final, "USER")
    assert users, "no USER: the container would run as root"
    uid, _, gid = users[-1].args.partition(":")
    assert uid.isdigit() and int(uid) > 0, "a numeric UID lets Kubernetes verify runAsNonRoot"
    assert gid.isdigit() and int(gid) > 0
    pod = only(render("gpu"), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert pod["securityContext"]["runAsGroup"] == int(gid)
    assert pod["securityContext"]["fsGroup"] == int(gid)


def test_entrypoint_is_the_server(final):
    entrypoint = _all(final, "ENTRYPOINT")[-1].args
    assert json.loads(entrypoint) == ["tunewire-server"], "exec form, so the server itself receives SIGTERM"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "tunewire-server" in scripts


def test_exposes_the_pods_ports(final):
    exposed = {int(p.split("/")[0]) for ins in _all(final, "EXPOSE") for p in ins.args.split()}
    container = server_container(only(render("gpu"), "Deployment"))
    assert exposed == {p["containerPort"] for p in container["ports"]} == {50051, 9090, 8000}


def test_environment_serves_in_a_container(final, tmp_path):
    from dataclasses import fields

    from tunewire_server.config import ENV_PREFIX, Settings, load_settings

    env = _env(final)
    settings_env = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    known = {f.name for f in fields(Settings)}
    assert all(k[len(ENV_PREFIX):].lower() in known for k in settings_env), settings_env
    settings = load_settings([], environ=settings_env)
    assert settings.host == "0.0.0.0"
    assert settings.log_format == "json"
    assert env["HF_HUB_OFFLINE"] == "${HF_HUB_OFFLINE}" and _args(final)["HF_HUB_OFFLINE"] == "0"


def test_state_directories_are_volumes(final):
    env = _env(final)
    volumes = {PurePosixPath(v) for ins in _all(final, "VOLUME") for v in json.loads(ins.args)}
    for path in (env["TUNEWIRE_DATA_DIR"], env["HF_HOME"]):
        assert any(PurePosixPath(path) == v or v in PurePosixPath(path).parents for v in volumes), path


def test_image_and_manifests_agree(final):
    """Where the image and the ConfigMap both set a variable, they set it the same way."""
    image_env = _env(final)
    for overlay in ALL_OVERLAYS:
        objects = render(overlay)
        pod_env = container_env(objects, server_container(only(objects, "Deployment")))
        for key in ("TUNEWIRE_DATA_DIR", "HF_HOME", "TUNEWIRE_PORT", "TUNEWIRE_HOST", "TUNEWIRE_LOG_FORMAT"):
            assert pod_env[key] == image_env[key], (overlay, key)


# --- the build context --------------------------------------------------------------------------------------------

def _pattern_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as a regex: `**` spans folders, `*` and `?` stay within one."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def _dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), _pattern_regex(line.lstrip("!").strip("/"))))
    return rules


def _ignored(path: str) -> bool:
    """Docker's rule: the last pattern that matches the path, or a folder above it, decides."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negated, regex in _dockerignore_rules():
        if any(regex.match(c) for c in candidates):
            ignored = not negated
    return ignored


def test_build_context_has_what_the_build_copies(build_stages):
    sources = []
    for stage in build_stages:
        for ins in _all(stage, "COPY"):
            if "--from=" in ins.args:
                continue
            sources += [s.rstrip("*") for s in ins.args.split()[:-1] if not s.startswith("--")]
    assert sources
    for source in sources:
        assert not _ignored(source.rstrip("/")), f"{source} is excluded by .dockerignore"
    for package_file in ("server/tunewire_server/__main__.py", "client/tunewire/v1/tuning_service_pb2.py"):
        assert (ROOT / package_file).is_file() and not _ignored(package_file), package_file


@pytest.mark.parametrize("path", [".git/HEAD", ".venv/bin/python", "tests/conftest.py", ".demo/data/tunewire.db",
                                  "tunewire-data/tunewire.db", "k8s/base/deployment.yaml",
                                  "server/tunewire_server/__pycache__/config.cpython-312.pyc"])
def test_build_context_leaves_out(path):
    assert _ignored(path), f"{path} would be sent to the Docker daemon"
