"""One box to many without losing jobs (issue 15): a real one-box server (SQLite, local folder) trains a job,
takes an uploaded dataset and is killed while a second job runs; `tunewire-server migrate-store` copies its
SQLite store into a real, empty PostgreSQL and its artifacts into the bucket (moto's S3 server); a replica
with a fresh data folder (the checkpoint key shared, as the overlay's Secret shares it) then serves the old
jobs (record, events, checkpoints, model download with every sha256 checked, the dataset) and finishes the
job the box was running from its checkpoint in the bucket. A second migration into the same database is
refused."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import tunewire
from tests import tiny
from tests.support.postgres import postgres_server  # noqa: F401 - the session's PostgreSQL
from tests.support.s3 import ACCESS_KEY, REGION, SECRET_KEY, running_moto, s3_options
from tests.support.server_process import ServerProcess
from tests.support.specs import tiny_classification
from tunewire import CheckpointSaved, JobState
from tunewire_server.artifacts import open_store
from tunewire_server.checkpoints import KEY_FILE

pytestmark = pytest.mark.slow

AWS_ENV = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION}


def migrate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunewire_server", "migrate-store", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **AWS_ENV})


def test_a_sqlite_box_moves_to_postgresql_and_the_bucket_without_losing_jobs(
        tmp_path, models_root, postgres_server):  # noqa: F811 - the fixture imported above
    old = tmp_path / "old"
    tiny.write_jsonl(old / "datasets" / "train.jsonl", tiny.sentiment_rows(32))
    box = ServerProcess(old, models_root).start(60)
    with tunewire.Client(box.address, timeout=60) as c:
        done = c.wait(c.submit(tiny_classification(max_steps=8, save_strategy="steps", save_steps=4,
                                                   precision="fp32")).id)
        dataset = c.upload_dataset(tiny.write_jsonl(tmp_path / "up.jsonl", tiny.sentiment_rows(12)),
                                   label_column="label")
        running = c.submit(tiny_classification(max_steps=200, logging_steps=5, save_strategy="steps",
                                               save_steps=10, lr_scheduler_type="constant"))
        for event in c.stream_metrics(running.id):
            if isinstance(event.data, CheckpointSaved):
                break
        time.sleep(0.5)  # its checkpoint marked complete on disk
        old_events = [(e.seq, e.kind) for e in c.stream_metrics(done.id)]
    box.signal(signal.SIGKILL)  # the box dies with a job running
    box.wait()

    with running_moto() as moto:
        bucket = moto.create_bucket()
        url = postgres_server.new_database()
        s3 = ("--artifacts", f"s3://{bucket}/svc", "--s3-endpoint-url", moto.endpoint)
        result = migrate("--from", f"sqlite:///{old / 'tunewire.db'}", "--to", url, *s3)
        assert result.returncode == 0, result.stderr
        assert "'jobs': 2" in result.stdout and running.id in result.stdout  # taken over at the next start
        store = open_store(f"s3://{bucket}/svc", **s3_options(moto, bucket))
        assert f"jobs/{done.id}/model" in store.list_units(f"jobs/{done.id}")
        assert store.exists(f"datasets/{dataset.id.removeprefix('ds-')}.jsonl")

        again = migrate("--from", str(old / "tunewire.db"), "--to", url)
        assert again.returncode == 2 and "not empty" in again.stderr and "2 jobs" in again.stderr

        new = tmp_path / "new"
        new.mkdir()
        shutil.copy(old / KEY_FILE, new / KEY_FILE)  # the tunewire-checkpoint-key Secret
        shutil.copytree(old / "datasets", new / "datasets")  # the path-named dataset of the running job
        replica = ServerProcess(new, models_root, "--store", url, *s3, "--s3-max-retries", "1",
                                env=AWS_ENV).start(60)
        try:
            with tunewire.Client(replica.address, timeout=60) as c:
                job = c.get(done.id)
                assert job.state == JobState.SUCCEEDED and job.metrics == done.metrics
                assert [(e.seq, e.kind) for e in c.stream_metrics(done.id)] == old_events
                assert {j.id for j in c.list_jobs()} == {done.id, running.id}
                assert c.get_dataset(dataset.id).sha256 == dataset.sha256
                assert [cp.step for cp in c.list_checkpoints(done.id).checkpoints] == [8]
                model = c.download(done.id, tmp_path / "model")
                assert model.received_bytes == model.total_bytes > 0
                finished = c.wait(running.id, raise_on_failure=False)
                assert finished.state == JobState.SUCCEEDED, finished.error
            log = (new / "jobs" / running.id / "worker.log").read_text()
            assert "fetching checkpoint-" in log and "resuming from checkpoint-" in log
        finally:
            replica.stop(timeout=15)
