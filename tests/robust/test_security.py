"""Auth, TLS, path and model checks, secret handling and checkpoint trust, against real servers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

import tunewire
from tests import tiny
from tunewire_server.checkpoints import (
    MARKER,
    is_complete,
    latest_complete,
    load_or_create_key,
    mark_complete,
)

SPEC = {
    "base_model": "tiny-bert",
    "classification": {},
    "train_dataset": {"file": {"path": "train.jsonl"}},
    "hyperparameters": {"max_steps": 2, "save_strategy": "no", "per_device_train_batch_size": 4},
}


def _data(server):
    tiny.write_jsonl(server.settings.dataset_root / "train.jsonl", tiny.sentiment_rows(16))


# --- bearer tokens -------------------------------------------------------------------------------


def test_bearer_tokens(server_factory, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# one per line\ntoken-one\ntoken-two\n")
    st = server_factory(auth_tokens_file=tokens)
    _data(st)
    for token in (None, "wrong", "token-one-but-longer", ""):
        with tunewire.Client(st.address, token=token) as c:
            with pytest.raises(tunewire.UnauthenticatedError):
                c.submit(SPEC)
            with pytest.raises(tunewire.UnauthenticatedError):
                list(c.list_jobs())
            with pytest.raises(tunewire.UnauthenticatedError):
                list(c.stream_metrics("job-x"))
            assert c.health()  # probes carry no token
    with tunewire.Client(st.address, token="token-two") as c:
        job = c.submit(SPEC)
        assert c.wait(job.id).state == tunewire.JobState.SUCCEEDED
        assert c.predict(job.id, ["great"])[0].label in ("positive", "negative")


def test_an_empty_token_file_refuses_to_start(tmp_path):
    from tunewire_server.config import Settings

    empty = tmp_path / "tokens"
    empty.write_text("\n# nothing\n")
    with pytest.raises(ValueError, match="holds no token"):
        Settings(data_dir=tmp_path, auth_tokens_file=empty)


# --- TLS and mutual TLS ---------------------------------------------------------------------------


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=tunewire-test-ca", cwd=d)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other-ca.key", "-out", "other-ca.pem",
             "-days", "2", "-subj", "/CN=some-other-ca", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext", cwd=d)
    return d


def test_tls(server_factory, pki):
    st = server_factory(tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key")
    creds = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes())
    with tunewire.Client(st.address, credentials=creds) as c:
        assert c.health() and list(c.list_jobs()) == []
    # a plaintext client never gets a connection (the server closes it): no call reaches the service
    with tunewire.Client(st.address, timeout=3) as plain, pytest.raises(tunewire.UnavailableError) as info:
        list(plain.list_jobs())
    assert "failed to connect" in str(info.value), info.value
    # a client trusting another CA refuses the server's certificate
    other = grpc.ssl_channel_credentials(root_certificates=(pki / "other-ca.pem").read_bytes())
    with tunewire.Client(st.address, credentials=other, timeout=3) as c, \
            pytest.raises(tunewire.UnavailableError) as info:
        list(c.list_jobs())
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value), info.value


@pytest.mark.parametrize("cert, key, ca, message", [
    ("server.pem", "client.key", None, "tls_key_file .*client.key is not the private key of tls_cert_file"),
    ("server.pem", "garbage.pem", None, "tls_key_file .*garbage.pem: not an unencrypted PEM private key"),
    ("garbage.pem", "server.key", None, "tls_cert_file .*garbage.pem: not a PEM certificate"),
    ("server.key", "server.key", None, "tls_cert_file .*server.key: not a PEM certificate"),
    ("server.pem", "server.key", "garbage.pem", "tls_client_ca_file .*garbage.pem: not a PEM certificate"),
])
def test_tls_files_that_do_not_fit_are_named(tmp_path, models_root, pki, cert, key, ca, message):
    """Before the fix each of these failed with grpc's "Failed to bind to address"."""
    from tests.support.server_thread import ServerThread, make_settings

    (pki / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    settings = make_settings(tmp_path / "data", models_root, tls_cert_file=pki / cert, tls_key_file=pki / key,
                             tls_client_ca_file=pki / ca if ca else None)
    st = ServerThread(settings)
    try:
        with pytest.raises(ValueError, match=message):
            st.start()
        assert st.server.manager is None  # refused before anything started
    finally:
        st.loop.call_soon_threadsafe(st.loop.stop)


def test_the_server_command_exits_non_zero_naming_a_mismatched_key(tmp_path, models_root, pki):
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "tunewire_server", "--port", "0", "--data-dir", str(tmp_path / "data"),
         "--model-root", str(models_root), "--metrics-port", "-1", "--tls-cert-file", str(pki / "server.pem"),
         "--tls-key-file", str(pki / "client.key")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "tls_key_file" in result.stderr and "is not the private key of tls_cert_file" in result.stderr
    assert "Failed to bind" not in result.stderr and "Traceback" not in result.stderr


def test_mutual_tls_refuses_a_client_without_a_certificate(server_factory, pki):
    st = server_factory(tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key",
                        tls_client_ca_file=pki / "ca.pem")
    ca = (pki / "ca.pem").read_bytes()
    no_cert = grpc.ssl_channel_credentials(root_certificates=ca)
    with tunewire.Client(st.address, credentials=no_cert, timeout=3) as c:
        with pytest.raises(tunewire.UnavailableError):
            list(c.list_jobs())
        assert not c.health(timeout=3)
    with_cert = grpc.ssl_channel_credentials(root_certificates=ca, private_key=(pki / "client.key").read_bytes(),
                                             certificate_chain=(pki / "client.pem").read_bytes())
    with tunewire.Client(st.address, credentials=with_cert) as c:
        assert c.health() and list(c.list_jobs()) == []


def test_the_http_face_uses_the_same_tls_and_mutual_tls(server_factory, pki):
    """The OpenAI-compatible port serves the gRPC port's certificate and, with tls_client_ca_file, asks
    clients for a certificate too; its bearer tokens are the same."""
    import ssl
    import urllib.error
    import urllib.request

    st = server_factory(tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key",
                        tls_client_ca_file=pki / "ca.pem", http_port=0, auth_tokens="tls-token")
    url = f"https://127.0.0.1:{st.server.http_port}/v1/models"
    request = urllib.request.Request(url, headers={"Authorization": "Bearer tls-token"})
    no_cert = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        urllib.request.urlopen(request, context=no_cert, timeout=5).read()
    with_cert = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with_cert.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    with urllib.request.urlopen(request, context=with_cert, timeout=5) as answer:
        assert json.loads(answer.read())["object"] == "list"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, context=with_cert, timeout=5)
    assert refused.value.code == 401
    plain = url.replace("https://", "http://")
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(plain, timeout=5).read()


# --- paths, models ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "..%2f..%2fetc%2fpasswd", "link-out.jsonl"])
def test_client_paths_never_leave_the_roots(server, client, tmp_path, path):
    outside = tmp_path / "outside.jsonl"
    outside.write_text('{"text": "x", "label": "a"}\n')
    link = server.settings.dataset_root / "link-out.jsonl"
    if not link.exists():
        os.symlink(outside, link)
    spec = {**SPEC, "train_dataset": {"file": {"path": path}}}
    with pytest.raises(tunewire.InvalidArgumentError) as info:
        client.submit(spec)
    assert info.value.violations[0].field == "train_dataset.file.path"
    with pytest.raises(tunewire.InvalidArgumentError) as info:
        client.submit({**SPEC, "base_model": "../" + path})
    assert info.value.violations[0].field == "base_model"


def test_model_allow_list(server_factory, models_root):
    approved = models_root / "approved-bert"  # a local model whose name the allow-list matches
    if not approved.exists():
        shutil.copytree(models_root / "tiny-bert", approved)
    st = server_factory(allowed_models="approved-*,org/*")
    _data(st)
    with tunewire.Client(st.address) as c:
        with pytest.raises(tunewire.InvalidArgumentError, match="allow-list") as info:
            c.submit(SPEC)
        assert info.value.violations[0].field == "base_model"
        job = c.submit({**SPEC, "base_model": "approved-bert"})  # an allowed model is accepted
        assert job.state in (tunewire.JobState.QUEUED, tunewire.JobState.RUNNING)
        c.cancel(job.id)


def test_custom_code_models_are_refused(server, client, models_root):
    folder = server.settings.model_root / "remote-code"
    folder.mkdir(exist_ok=True)
    config = json.loads((models_root / "tiny-bert" / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    _data(server)
    with pytest.raises(tunewire.InvalidArgumentError, match="custom code"):
        client.submit({**SPEC, "base_model": "remote-code"})


# --- secrets ----------------------------------------------------------------------------------------


def test_hf_token_reaches_the_worker_environment_only(server_factory, monkeypatch, capfd):
    canary = "hf_CANARY_7c1e0f3b9d"
    monkeypatch.setenv("HF_TOKEN", canary)
    st = server_factory()
    _data(st)
    with tunewire.Client(st.address) as c:
        job = c.submit(SPEC)
        import time

        pid_file = st.settings.jobs_dir / job.id / "worker.pid"
        deadline = time.monotonic() + 60
        environ = b""
        while time.monotonic() < deadline and not environ:
            try:
                environ = Path(f"/proc/{int(pid_file.read_text())}/environ").read_bytes()
            except (OSError, ValueError):
                time.sleep(0.02)
        assert canary.encode() in environ  # it did reach the worker, through its environment
        c.wait(job.id)
        events = list(c.stream_metrics(job.id))
        got = c.get(job.id)
    st.stop()
    assert canary not in repr(events) and canary not in repr(got)
    for path in st.settings.data_dir.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert canary.encode() not in path.read_bytes(), f"the token leaked into {path}"
    out, err = capfd.readouterr()
    assert canary not in out and canary not in err


# --- checkpoints ------------------------------------------------------------------------------------


def test_only_checkpoints_this_server_wrote_are_resumed(tmp_path):
    key = load_or_create_key(tmp_path)
    assert load_or_create_key(tmp_path) == key and oct((tmp_path / "checkpoint.key").stat().st_mode)[-3:] == "600"
    ckpts = tmp_path / "checkpoints"
    for step in (10, 20, 30):
        folder = ckpts / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(os.urandom(64))
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        mark_complete(folder, step, key)
    assert latest_complete(ckpts, key).name == "checkpoint-30"
    # a forged marker (someone else's key) is not trusted
    mark_complete(ckpts / "checkpoint-30", 30, b"not-the-server-key")
    assert latest_complete(ckpts, key).name == "checkpoint-20"
    # a file changed after the marker was written: half-written or tampered
    (ckpts / "checkpoint-20" / "model.safetensors").write_bytes(os.urandom(65))
    assert latest_complete(ckpts, key).name == "checkpoint-10"
    (ckpts / "checkpoint-10" / MARKER).unlink()
    assert not is_complete(ckpts / "checkpoint-10", key)
    assert latest_complete(ckpts, key) is None
