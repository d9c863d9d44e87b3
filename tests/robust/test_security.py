"""Auth, TLS, path and model checks, secret handling and checkpoint trust, against real servers."""

from __future__ import annotations

import json
import os
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
        assert list(c.list_jobs()) == []
    with tunewire.Client(st.address, timeout=3) as plain, pytest.raises(tunewire.TunewireError):
        list(plain.list_jobs())


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


def test_model_allow_list(server_factory):
    st = server_factory(allowed_models="approved-*,org/*")
    _data(st)
    with tunewire.Client(st.address) as c, pytest.raises(tunewire.InvalidArgumentError, match="allow-list"):
        c.submit(SPEC)


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
