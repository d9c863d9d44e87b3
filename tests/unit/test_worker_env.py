"""Workers get no secrets they do not need: the server's settings (auth tokens, TLS key paths) stay out of
the environment of its training and inference workers, which run third-party model and data code."""

from __future__ import annotations

import os
from pathlib import Path

import tunewire
from tests import tiny
from tests.support.procs import training_workers
from tests.support.waiting import wait_for
from tunewire_server.workers.process import worker_environment

TOKEN = "tw-secret-CANARY-5d2a91"
SECRETS = {
    "TUNEWIRE_AUTH_TOKENS": TOKEN,
    "TUNEWIRE_AUTH_TOKENS_FILE": f"/run/secrets/{TOKEN}-file",
    "TUNEWIRE_TLS_KEY_FILE": f"/run/secrets/{TOKEN}.key",
    "TUNEWIRE_TLS_CLIENT_CA_FILE": f"/run/secrets/{TOKEN}-ca.pem",
}
SPEC = {
    "base_model": "tiny-bert",
    "classification": {},
    "train_dataset": {"file": {"path": "train.jsonl"}},
    "hyperparameters": {"max_steps": 2, "save_strategy": "no", "per_device_train_batch_size": 4},
}


def test_worker_environment_keeps_what_workers_read_and_drops_server_settings():
    base = {**SECRETS, "PATH": "/usr/bin", "HF_TOKEN": "hf_x", "CUDA_VISIBLE_DEVICES": "0",
            "TUNEWIRE_TORCH_THREADS": "2", "TUNEWIRE_PORT": "50051"}
    env = worker_environment({"TUNEWIRE_CACHE_SIZE": "3"}, base=base)
    assert env == {"PATH": "/usr/bin", "HF_TOKEN": "hf_x", "CUDA_VISIBLE_DEVICES": "0",
                   "TUNEWIRE_TORCH_THREADS": "2", "TUNEWIRE_CACHE_SIZE": "3"}


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _inference_worker(data_dir: Path) -> int | None:
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes()
            log = os.readlink(entry / "fd" / "1")
        except (OSError, ValueError):
            continue
        if b"tunewire_server.worker.inference.main" in cmd and Path(log).is_relative_to(data_dir):
            return int(entry.name)
    return None


def test_workers_get_no_auth_token_or_tls_key_path(server_factory, monkeypatch):
    for name, value in SECRETS.items():  # a server configured through its environment, as in a container
        monkeypatch.setenv(name, value)
    st = server_factory(auth_tokens=TOKEN)
    tiny.write_jsonl(st.settings.dataset_root / "train.jsonl", tiny.sentiment_rows(16))
    data_dir = st.settings.data_dir

    # the warm training worker, started with the server
    training = _environ(wait_for(lambda: training_workers(data_dir))[0])
    assert training.get("TUNEWIRE_TORCH_THREADS") == "1"  # what it needs did reach it
    with tunewire.Client(st.address, token=TOKEN) as c:
        job = c.wait(c.submit(SPEC).id)
        assert c.predict(job.id, ["great"])[0].label in ("positive", "negative")
    inference = _environ(wait_for(lambda: _inference_worker(data_dir)))
    assert inference.get("TUNEWIRE_CACHE_SIZE") == str(st.settings.inference_cache_size)
    for environ in (training, inference):
        leaked = sorted(name for name, value in environ.items() if name in SECRETS or TOKEN in value)
        assert not leaked, leaked
