"""`tunewire-server` started with the gpu overlay's environment answers the probes the Deployment sends.

The pod's environment comes from the rendered ConfigMap and env list, with only what cannot apply on this machine
replaced: the listen address and ports (free local ones), the volumes (temporary folders), the Secret's token file
(a temporary one) and the warm worker (off, to keep torch out of a test about the control plane).
Health is checked twice over: the way the kubelet does it (no credentials, no reflection: grpcurl with the health
service's descriptors from a protoset file) and the way docs/deploy.md tells an operator to (grpcurl with a token,
through server reflection, which needs no token: the contract is public).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploy.tools import container_env, describe, only, render, run, server_container, tool
from tests.support.ports import free_port

TOKEN = "deploy-test-token"
BEARER = f"authorization: Bearer {TOKEN}"


def _entry_point() -> str:
    path = Path(sys.executable).parent / "tunewire-server"
    assert path.is_file(), f"no tunewire-server next to {sys.executable}: pip install -e '.[server]'"
    return str(path)


@pytest.fixture(scope="module")
def health_protoset(tmp_path_factory) -> Path:
    """grpc.health.v1's descriptors, so grpcurl needs no reflection (the kubelet knows the service natively)."""
    from google.protobuf import descriptor_pb2
    from grpc_health.v1 import health_pb2

    files = descriptor_pb2.FileDescriptorSet()
    health_pb2.DESCRIPTOR.CopyToProto(files.file.add())
    path = tmp_path_factory.mktemp("protoset") / "health.protoset"
    path.write_bytes(files.SerializeToString())
    return path


@pytest.fixture
def deployment():
    return only(render("gpu"), "Deployment")


def _pod_env(deployment, tmp_path) -> tuple[dict, int, int]:
    """The container's environment with this machine's stand-ins; (env, gRPC port, HTTP port)."""
    container = server_container(deployment)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEWIRE_")}
    env.update(container_env(render("gpu"), container))
    tokens = tmp_path / "auth-tokens"
    tokens.write_text(TOKEN + "\n")
    port = free_port()
    env.update({
        "TUNEWIRE_HOST": "127.0.0.1",
        "TUNEWIRE_PORT": str(port),
        "TUNEWIRE_METRICS_PORT": str(free_port()),
        "TUNEWIRE_HTTP_PORT": str(http_port := free_port()),
        "TUNEWIRE_DATA_DIR": str(tmp_path / "data"),
        "TUNEWIRE_AUTH_TOKENS_FILE": str(tokens),
        "TUNEWIRE_WARM_WORKER": "false",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
    })
    return env, port, http_port


@pytest.fixture
def server(deployment, tmp_path):
    env, port, http_port = _pod_env(deployment, tmp_path)
    address = f"127.0.0.1:{port}"
    with open(tmp_path / "server.log", "w+") as log:
        proc = subprocess.Popen([_entry_point()], env=env, stdout=log, stderr=subprocess.STDOUT)
        proc.http_url = f"http://127.0.0.1:{http_port}"  # the OpenAI-compatible face
        try:
            _wait_until_serving(proc, address, log)
            yield proc, address, log
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def _wait_until_serving(proc: subprocess.Popen, address: str, log) -> None:
    deadline = time.monotonic() + 20
    while True:
        check = run(tool("grpcurl"), "-plaintext", "-max-time", "2", "-H", BEARER, address,
                    "grpc.health.v1.Health/Check", timeout=10)
        if check.returncode == 0 and json.loads(check.stdout).get("status") == "SERVING":
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            pytest.fail(f"the server did not start:\n{log.read()}\n{describe(check)}")
        time.sleep(0.2)


def _health(address: str, service: str, *how: str) -> str:
    proc = run(tool("grpcurl"), "-plaintext", "-max-time", "5", *how, "-d", json.dumps({"service": service}),
               address, "grpc.health.v1.Health/Check", timeout=15)
    assert proc.returncode == 0, describe(proc)
    return json.loads(proc.stdout)["status"]


def test_probes_answer_serving_without_credentials(server, deployment, health_protoset):
    """Kubelet gRPC probes carry no token and use no reflection: health must answer them while auth is on."""
    _, address, _ = server
    container = server_container(deployment)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        service = container[probe]["grpc"].get("service", "")
        assert _health(address, service, "-protoset", str(health_protoset)) == "SERVING", probe


def test_operator_health_check_with_a_token(server):
    """docs/deploy.md: `grpcurl -plaintext -H "authorization: Bearer $TOKEN" ADDRESS grpc.health.v1.Health/Check`."""
    _, address, _ = server
    assert _health(address, "", "-H", BEARER) == "SERVING"
    assert _health(address, "tunewire.v1.TuningService", "-H", BEARER) == "SERVING"


def test_reflection_lists_the_services_without_a_token(server):
    """The contract is public: reflection (like health) needs no token, so grpcurl can discover it."""
    _, address, _ = server
    proc = run(tool("grpcurl"), "-plaintext", address, "list", timeout=15)
    assert proc.returncode == 0, describe(proc)
    assert {"tunewire.v1.TuningService", "grpc.health.v1.Health"} <= set(proc.stdout.split())
    assert _health(address, "tunewire.v1.TuningService") == "SERVING"  # found through reflection


def test_the_job_service_needs_the_token(server):
    _, address, _ = server
    call = ("-plaintext", "-max-time", "5", "-d", "{}", address, "tunewire.v1.TuningService/ListJobs")
    refused = run(tool("grpcurl"), *call, timeout=15)
    assert refused.returncode != 0 and "Unauthenticated" in refused.stdout + refused.stderr, describe(refused)
    allowed = run(tool("grpcurl"), "-H", BEARER, *call, timeout=15)
    assert allowed.returncode == 0, describe(allowed)


def test_the_http_face_answers_behind_the_same_token(server):
    """The pod's `http` port: the OpenAI-compatible face, behind the Secret's token like gRPC."""
    import urllib.error
    import urllib.request

    proc, _, _ = server
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{proc.http_url}/v1/models", timeout=10)
    assert refused.value.code == 401
    assert json.loads(refused.value.read())["error"]["type"] == "authentication_error"
    allowed = urllib.request.Request(f"{proc.http_url}/v1/models", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(allowed, timeout=10) as answer:
        assert json.loads(answer.read())["object"] == "list"


def test_json_logs_and_a_clean_exit_on_sigterm(server):
    """What the kubelet does on a rollout or a drain: SIGTERM, then wait terminationGracePeriodSeconds."""
    proc, _, log = server
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    log.seek(0)
    events = []
    for line in log.read().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    names = [e.get("event") for e in events]
    assert "serving" in names and "stopped" in names, names


def test_sigterm_while_starting_is_a_clean_stop(deployment, tmp_path):
    """A rollout can send SIGTERM as soon as the gRPC port answers, while the HTTP face is still coming up:
    the same clean stop (exit 0, "stopped" logged), not Python's default death by the signal."""
    import socket

    env, port, _ = _pod_env(deployment, tmp_path)
    with open(tmp_path / "server.log", "w+") as log:
        proc = subprocess.Popen([_entry_point()], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            while True:  # the first moment the gRPC port takes a connection
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    assert proc.poll() is None and time.monotonic() < deadline, "the server did not bind"
                    time.sleep(0.005)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=20)
            log.seek(0)
            text = log.read()
            assert code == 0, text
            assert '"stopped"' in text, text
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
