"""Issue 15, shared artifacts: with artifacts=s3://... (moto's S3 server on 127.0.0.1, the real obstore client)
a job's checkpoints and final model are complete units in the bucket, a replica whose local job folders are
gone resumes from the bucket's checkpoint and serves the model from it, an uploaded dataset trains without
its local copy, and a store that cannot be reached while the worker saves fails the job SYSTEM with nothing
marked complete."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest

import tunewire
from tests import tiny
from tests.support.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3, running_moto, s3_options
from tests.support.specs import tiny_classification
from tests.support.waiting import wait_for
from tunewire import CheckpointSaved, JobState, StateChange, TrainLog
from tunewire_server.artifacts import open_store
from tunewire_server.checkpoints import MARKER

AWS_ENV = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION}


@pytest.fixture(scope="module")
def moto():
    with running_moto() as server:
        yield server


def store_args(server: MotoS3, bucket: str) -> tuple[str, ...]:
    return ("--artifacts", f"s3://{bucket}/svc", "--s3-endpoint-url", server.endpoint, "--s3-max-retries", "1",
            "--s3-retry-timeout-s", "3")


def bucket_store(server: MotoS3, bucket: str):
    """The test's own view of the bucket (the same prefix as the server's)."""
    return open_store(f"s3://{bucket}/svc", **s3_options(server, bucket))


def start(process_factory, data: Path, server: MotoS3, bucket: str):
    return process_factory(data, *store_args(server, bucket), env=AWS_ENV)


def test_a_replica_with_its_job_folders_wiped_resumes_from_the_bucket_and_succeeds(process_factory, moto,
                                                                                   tmp_path):
    bucket = moto.create_bucket()
    store = bucket_store(moto, bucket)
    data = tmp_path / "d"
    tiny.write_jsonl(data / "datasets" / "train.jsonl", tiny.sentiment_rows(32))
    server = start(process_factory, data, moto, bucket)
    spec = tiny_classification(max_steps=60, logging_steps=1, save_strategy="steps", save_steps=10,
                               save_total_limit=2, lr_scheduler_type="constant", learning_rate=0.001)
    with tunewire.Client(server.address) as c:
        job = c.submit(spec)
        seen = 0
        for event in c.stream_metrics(job.id):
            seen += isinstance(event.data, CheckpointSaved)
            if seen == 2:
                break
    prefix = f"jobs/{job.id}/checkpoints"
    wait_for(lambda: len(store.list_units(prefix)) >= 1, timeout=30)  # uploads run beside training
    server.signal(signal.SIGKILL)
    server.wait()
    time.sleep(1)  # the worker dies with its server (PR_SET_PDEATHSIG)
    stored = store.list_units(prefix)
    newest = max(int(k.rsplit("-", 1)[1]) for k in stored)
    # Another replica's view: no job folders at all (the database and the checkpoint key are shared).
    shutil.rmtree(data / "jobs")
    again = start(process_factory, data, moto, bucket)
    with tunewire.Client(again.address) as c:
        done = c.wait(job.id, raise_on_failure=False)
        events = list(c.stream_metrics(job.id))
    assert done.state == JobState.SUCCEEDED, done.error
    log = (data / "jobs" / job.id / "worker.log").read_text()
    assert f"fetching checkpoint-{newest} from the artifact store" in log
    assert f"resuming from checkpoint-{newest}" in log
    running = [i for i, e in enumerate(events) if isinstance(e.data, StateChange) and e.data.state == JobState.RUNNING]
    steps_after = [e.data.step for e in events[running[-1]:] if isinstance(e.data, TrainLog)]
    assert steps_after and min(steps_after) > newest  # resumed, not restarted from step 0
    units = store.list_units(f"jobs/{job.id}")
    assert f"jobs/{job.id}/model" in units
    assert f"jobs/{job.id}/checkpoints/checkpoint-60" in units
    local = data / "jobs" / job.id / "model"
    assert store.manifest(f"jobs/{job.id}/model").marker == (local / MARKER).read_bytes()


def test_predict_fetches_a_model_whose_local_folder_is_gone(process_factory, moto, tmp_path):
    bucket = moto.create_bucket()
    store = bucket_store(moto, bucket)
    data = tmp_path / "d"
    tiny.write_jsonl(data / "datasets" / "train.jsonl", tiny.sentiment_rows(16))
    server = start(process_factory, data, moto, bucket)
    with tunewire.Client(server.address) as c:
        job = c.wait(c.submit(tiny_classification(max_steps=4, save_strategy="no", precision="fp32")).id)
        assert store.list_units(f"jobs/{job.id}") == [f"jobs/{job.id}/model"]  # in the bucket once SUCCEEDED
        shutil.rmtree(data / "jobs" / job.id / "model")  # as on a replica that never ran the job
        predictions = c.predict(job.id, ["a lovely film", "a dreadful film"])
    assert len(predictions) == 2
    assert (data / "jobs" / job.id / "model" / MARKER).is_file()


def test_an_unreachable_store_while_saving_fails_the_job_system_with_nothing_marked(process_factory, tmp_path):
    s3 = MotoS3().start()
    bucket = s3.create_bucket()
    data = tmp_path / "d"
    tiny.write_jsonl(data / "datasets" / "train.jsonl", tiny.sentiment_rows(16))
    server = start(process_factory, data, s3, bucket)
    s3.stop()
    try:
        with tunewire.Client(server.address) as c:
            spec = {**tiny_classification(max_steps=12, save_strategy="steps", save_steps=4), "max_retries": 1}
            done = c.wait(c.submit(spec).id, raise_on_failure=False)
            events = list(c.stream_metrics(done.id))
        assert done.state == JobState.FAILED
        assert (done.error.code, done.error.kind) == ("ARTIFACT_STORE_UNAVAILABLE", "SYSTEM"), done.error
        retried = [e for e in events if isinstance(e.data, StateChange) and e.data.state == JobState.QUEUED]
        assert len(retried) >= 2  # queued, then queued again by the job's one retry
        s3.start()
        assert bucket_store(s3, bucket).list_units("") == []  # nothing half-uploaded is a unit
    finally:
        s3.stop()


def test_an_uploaded_dataset_without_its_local_copy_trains_and_deleting_it_empties_the_bucket(
        process_factory, moto, tmp_path):
    bucket = moto.create_bucket()
    store = bucket_store(moto, bucket)
    data = tmp_path / "d"
    path = tiny.write_jsonl(tmp_path / "sentiment.jsonl", tiny.sentiment_rows(16))
    server = start(process_factory, data, moto, bucket)
    with tunewire.Client(server.address) as c:
        dataset = c.upload_dataset(path, label_column="label")
        key = f"datasets/{dataset.id.removeprefix('ds-')}.jsonl"
        assert store.stat(key).size == path.stat().st_size
        shutil.rmtree(data / "uploads" / "datasets")  # as on a replica that did not take the upload
        spec = tiny_classification(max_steps=3, save_strategy="no")
        spec["train_dataset"] = {"uploaded": {"dataset_id": dataset.id}}
        job = c.wait(c.submit(spec).id, raise_on_failure=False)
        assert job.state == JobState.SUCCEEDED, job.error
        c.delete_dataset(dataset.id)
    assert not store.exists(key)
