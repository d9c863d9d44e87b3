"""worker/training/shared.py: checkpoints and the final model uploaded as units (in the background, the
marker last), the newest stored checkpoint fetched when the job folder has none as new, uploaded datasets
fetched where the plan reads them, and the store's failures classed SYSTEM (S3 = moto on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from tests.support.s3 import MotoS3, running_moto, s3_options
from tunewire_server.artifacts import ArtifactStoreUnavailable, open_store
from tunewire_server.checkpoints import MARKER, mark_complete, verify
from tunewire_server.worker.training.failures import classify
from tunewire_server.worker.training.shared import Uploader, fetch_datasets, fetch_newer_checkpoint

KEY = b"s" * 32


@pytest.fixture(scope="module")
def moto():
    with running_moto() as server:
        yield server


@pytest.fixture
def store(moto):
    bucket = moto.create_bucket()
    return open_store(f"s3://{bucket}", **s3_options(moto, bucket))


def checkpoint(folder, step, content=b"w"):
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(content * 1000)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    mark_complete(folder, step, KEY)
    return folder


def test_checkpoints_go_up_in_the_background_and_the_model_after_them(store, tmp_path):
    up = Uploader(store, "job-a")
    up.checkpoint(checkpoint(tmp_path / "checkpoints" / "checkpoint-2", 2))
    up.checkpoint(checkpoint(tmp_path / "checkpoints" / "checkpoint-4", 4))  # waits for the first
    up.model(checkpoint(tmp_path / "model", 4, b"m"))
    assert store.list_units("jobs/job-a") == ["jobs/job-a/checkpoints/checkpoint-2",
                                              "jobs/job-a/checkpoints/checkpoint-4", "jobs/job-a/model"]
    assert store.manifest("jobs/job-a/model").marker == (tmp_path / "model" / MARKER).read_bytes()


def test_checkpoints_rotated_away_locally_leave_the_store_too(store, tmp_path):
    up = Uploader(store, "job-r")
    local = tmp_path / "checkpoints"
    up.checkpoint(checkpoint(local / "checkpoint-2", 2))
    up.wait()
    shutil.rmtree(local / "checkpoint-2")  # Trainer's rotation at the next save (save_total_limit=1)
    up.checkpoint(checkpoint(local / "checkpoint-4", 4))
    up.wait()
    assert store.list_units("jobs/job-r") == ["jobs/job-r/checkpoints/checkpoint-4"]


def test_an_upload_to_an_unreachable_store_fails_at_the_next_wait_and_marks_nothing(tmp_path):
    server = MotoS3().start()
    bucket = server.create_bucket()
    store = open_store(f"s3://{bucket}", **s3_options(server, bucket, max_retries=1, retry_timeout_s=1.0,
                                                      connect_timeout_s=0.5))
    server.stop()
    up = Uploader(store, "job-b")
    up.checkpoint(checkpoint(tmp_path / "checkpoint-2", 2))
    with pytest.raises(ArtifactStoreUnavailable):
        up.wait()
    up.wait()  # reported once
    server.start()
    try:
        assert store.list_units("") == []
    finally:
        server.stop()
    error = classify(ArtifactStoreUnavailable("could not upload"), "save")
    assert (error.code, error.kind) == ("ARTIFACT_STORE_UNAVAILABLE", "SYSTEM")


def test_the_newest_stored_checkpoint_is_fetched_when_the_job_folder_lacks_it(store, tmp_path):
    for step in (2, 4):
        store.put_unit(checkpoint(tmp_path / "made" / f"checkpoint-{step}", step), f"jobs/j/checkpoints/checkpoint-{step}")
    local = tmp_path / "job" / "checkpoints"
    checkpoint(local / "checkpoint-2", 2)
    (local / "checkpoint-6").mkdir()  # a later save that never completed does not count
    fetched = fetch_newer_checkpoint(store, "j", local, KEY)
    assert fetched == local / "checkpoint-4"
    assert verify(fetched, KEY) is None
    assert fetch_newer_checkpoint(store, "j", local, KEY) is None  # complete locally now: nothing to fetch
    assert fetch_newer_checkpoint(store, "other", tmp_path / "empty", KEY) is None  # nothing stored


def test_a_local_checkpoint_that_does_not_verify_is_replaced_by_the_stored_one(store, tmp_path):
    store.put_unit(checkpoint(tmp_path / "made" / "checkpoint-3", 3), "jobs/j/checkpoints/checkpoint-3")
    local = tmp_path / "job" / "checkpoints"
    checkpoint(local / "checkpoint-3", 3, b"x")
    (local / "checkpoint-3" / "model.safetensors").write_bytes(b"y" * 1000)  # corrupted at the same size
    fetch_newer_checkpoint(store, "j", local, KEY)
    assert verify(local / "checkpoint-3", KEY) is None


def test_an_uploaded_dataset_missing_here_is_fetched_where_the_plan_reads_it(store, tmp_path):
    data = b'{"text": "a", "label": "x"}\n'
    name = hashlib.sha256(data).hexdigest() + ".jsonl"
    (tmp_path / "src").write_bytes(data)
    store.put_file(f"datasets/{name}", tmp_path / "src")
    root = tmp_path / "uploads" / "datasets"
    spec = {"train_dataset": {"uploaded": {"dataset_id": "ds-" + name[:64]}}, "eval_dataset": {"inline": {}}}
    plan = {"train_dataset": {"kind": "file", "root": str(root), "relative": name},
            "eval_dataset": {"kind": "inline", "rows": []}}
    assert fetch_datasets(store, spec, plan) == []
    assert (root / name).read_bytes() == data
    store.delete_prefix(f"datasets/{name}")
    (root / name).unlink()
    assert fetch_datasets(store, spec, plan) == ["train_dataset"]
