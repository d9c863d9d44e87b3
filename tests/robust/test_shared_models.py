"""Issue 15, models out from any replica: with one PostgreSQL store and one bucket (moto's S3 server on
127.0.0.1, the real obstore client), a job trained on replica A is listed, downloaded (every sha256 checked
by the SDK) and deleted through replica B, which never ran it and has its own data folder (only the
checkpoint key is shared, as the overlay's Secret shares it); a merged form computed on one replica is stored
and reused by another; and a server whose artifact store cannot be used does not start."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tunewire
from tests import tiny, tiny_lm
from tests.support.ports import free_port
from tests.support.postgres import postgres_server  # noqa: F401 - the session's PostgreSQL
from tests.support.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3, running_moto, s3_options
from tests.support.server_process import ServerProcess
from tests.support.specs import tiny_classification
from tests.support.waiting import wait_for
from tunewire import JobState
from tunewire_server.artifacts import open_store
from tunewire_server.checkpoints import KEY_FILE

pytestmark = pytest.mark.slow

AWS_ENV = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION}


@pytest.fixture(scope="module")
def moto():
    with running_moto() as server:
        yield server


@pytest.fixture(scope="module")
def lm_models(models_root) -> Path:
    return tiny_lm.ensure_built(models_root)


class Pair:
    """Replicas sharing one PostgreSQL database, one bucket and the checkpoint key; each its own data folder."""

    def __init__(self, root: Path, models: Path, url: str, moto: MotoS3) -> None:
        self.root, self.models, self.url, self.moto = root, models, url, moto
        self.bucket = moto.create_bucket()
        self.store = open_store(f"s3://{self.bucket}/svc", **s3_options(moto, self.bucket))
        self.started: list[ServerProcess] = []

    def start(self, name: str) -> ServerProcess:
        data = self.root / name
        data.mkdir(parents=True, exist_ok=True)
        first = self.root / "a" / KEY_FILE
        if name != "a" and first.exists():  # the Secret every replica mounts
            shutil.copy(first, data / KEY_FILE)
        server = ServerProcess(data, self.models, "--store", self.url, "--replica-id", name,
                               "--artifacts", f"s3://{self.bucket}/svc", "--s3-endpoint-url", self.moto.endpoint,
                               "--s3-max-retries", "1", "--s3-retry-timeout-s", "3", env=AWS_ENV).start(60)
        self.started.append(server)
        return server

    def stop(self) -> None:
        for server in self.started:
            server.stop(timeout=15)  # a warm worker still importing torch holds a stop up; nothing to keep


@pytest.fixture
def pair(tmp_path, models_root, moto, postgres_server):  # noqa: F811 - the fixture imported above
    p = Pair(tmp_path, models_root, postgres_server.new_database(), moto)
    yield p
    p.stop()


def sha256s(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_a_job_trained_on_one_replica_is_listed_downloaded_and_deleted_through_another(pair, tmp_path):
    tiny.write_jsonl(tmp_path / "a" / "datasets" / "train.jsonl", tiny.sentiment_rows(32))
    a = pair.start("a")
    spec = tiny_classification(max_steps=12, logging_steps=1, save_strategy="steps", save_steps=4,
                               precision="fp32")
    with tunewire.Client(a.address, timeout=60) as c:
        job = c.wait(c.submit(spec).id, raise_on_failure=False)
    assert job.state == JobState.SUCCEEDED, job.error
    prefix = f"jobs/{job.id}"
    # A keeps the final model and the newest checkpoint (keep_checkpoints 1), in the bucket too
    wait_for(lambda: pair.store.list_units(f"{prefix}/checkpoints") == [f"{prefix}/checkpoints/checkpoint-12"],
             timeout=30)
    a.stop()  # B alone from here: it never ran the job and holds nothing of it
    b = pair.start("b")
    assert not (tmp_path / "b" / "jobs" / job.id).exists()
    with tunewire.Client(b.address, timeout=60) as c:
        listing = c.list_checkpoints(job.id)
        assert [cp.step for cp in listing.checkpoints] == [12]
        assert listing.final is not None and listing.final.step == 12
        model = c.download(job.id, tmp_path / "final")
        stored = pair.store.manifest(f"{prefix}/model").files
        assert {f.path: f.sha256 for f in model.files} == sha256s(tmp_path / "final")
        assert all(stored[f.path].sha256 == f.sha256 for f in model.files)  # the bucket's bytes
        assert "config.json" in sha256s(tmp_path / "final")
        checkpoint = c.download(job.id, tmp_path / "ckpt", checkpoint=12)
        assert {f.path: f.sha256 for f in checkpoint.files} == sha256s(tmp_path / "ckpt")
        with pytest.raises(tunewire.NotFoundError):  # pruned by A's retention: gone from the bucket
            c.download(job.id, tmp_path / "old", checkpoint=4)
        assert c.delete_job(job.id) is True
        assert pair.store.list_units(prefix) == []
        assert pair.store.delete_prefix(prefix) == 0  # not a marker-less file left either
        with pytest.raises(tunewire.NotFoundError):
            c.get(job.id)
        assert c.delete_job(job.id) is False
    assert not (tmp_path / "b" / "jobs" / job.id).exists()


LORA = {
    "base_model": "tiny-llama",
    "sft": {"text_field": "text", "max_length": 32},
    "lora": {"r": 4, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
    "train_dataset": {"file": {"path": "text.jsonl"}},
    "hyperparameters": {"max_steps": 2, "learning_rate": 0.05, "per_device_train_batch_size": 8,
                        "logging_steps": 1, "save_strategy": "no"},
}


def test_a_merged_form_computed_on_one_replica_is_stored_and_reused_by_another(pair, tmp_path, lm_models):
    tiny_lm.write_jsonl(tmp_path / "a" / "datasets" / "text.jsonl", tiny_lm.text_rows(16))
    a = pair.start("a")
    with tunewire.Client(a.address, timeout=120) as c:
        job = c.wait(c.submit(LORA).id, raise_on_failure=False)
    assert job.state == JobState.SUCCEEDED, job.error
    a.stop()
    b = pair.start("b")
    with tunewire.Client(b.address, timeout=300) as c:
        first = c.download(job.id, tmp_path / "merged-b", merged=True)
    assert "merge started" in b.log_path.read_text()
    assert f"jobs/{job.id}/merged/final" in pair.store.list_units(f"jobs/{job.id}")
    b.stop()
    c_ = pair.start("c")
    with tunewire.Client(c_.address, timeout=300) as c:
        assert c.list_checkpoints(job.id).final.merged_ready
        second = c.download(job.id, tmp_path / "merged-c", merged=True)
    assert "merge started" not in c_.log_path.read_text()  # fetched, not merged again
    assert {f.path: f.sha256 for f in second.files} == {f.path: f.sha256 for f in first.files}
    assert "adapter_config.json" not in sha256s(tmp_path / "merged-c")


def run_server(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tunewire_server", "--port", str(free_port()), "--data-dir", str(tmp_path / "d"),
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, **AWS_ENV, **(env or {})})


def test_a_missing_bucket_stops_the_server_at_start_naming_the_setting(moto, tmp_path):
    done = run_server(tmp_path, "--artifacts", "s3://no-such-bucket/x", "--s3-endpoint-url", moto.endpoint,
                      "--s3-max-retries", "0")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "artifacts" in done.stderr and "no-such-bucket" in done.stderr and "does not exist" in done.stderr


def test_an_unreachable_endpoint_stops_the_server_at_start_naming_the_setting(tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = run_server(tmp_path, "--artifacts", "s3://bucket/x", "--s3-endpoint-url", endpoint,
                      "--s3-max-retries", "0", "--s3-retry-timeout-s", "1")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "s3_endpoint_url" in done.stderr and endpoint in done.stderr
