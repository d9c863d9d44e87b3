"""Issue 12, item 12 (and 11, worker side): a checkpoint is resumed only if its content is what was written.

The completeness marker records every file's size and sha256 (signed, written last); a checkpoint whose
content no longer matches, or that matches but fails to load, is skipped for the one before it."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

import tunewire
from tests import tiny
from tests.support.disk import tmpfs
from tests.support.specs import tiny_classification
from tests.support.waiting import wait_for
from tunewire import CheckpointSaved, JobState, StateChange, TrainLog
from tunewire_server.checkpoints import (
    MARKER,
    complete_checkpoints,
    is_complete,
    latest_complete,
    load_or_create_key,
    mark_complete,
    verify,
)

KEY = b"k" * 32


def checkpoint(root: Path, step: int, key: bytes = KEY) -> Path:
    folder = root / f"checkpoint-{step}"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(os.urandom(4096))
    (folder / "sub" / "rng_state.pth").write_bytes(os.urandom(100))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    mark_complete(folder, step, key)
    return folder


# --- the marker -----------------------------------------------------------------------------------


def test_a_flipped_byte_at_the_same_size_is_caught(tmp_path):
    folder = checkpoint(tmp_path, 10)
    assert verify(folder, KEY) is None
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[3] ^= 0x01
    path.write_bytes(bytes(data))
    assert "sha256" in verify(folder, KEY) and not is_complete(folder, KEY)


def test_a_missing_file_an_extra_truncated_file_and_a_tampered_marker_are_caught(tmp_path):
    missing = checkpoint(tmp_path, 10)
    (missing / "sub" / "rng_state.pth").unlink()
    assert "missing" in verify(missing, KEY)

    extra = checkpoint(tmp_path, 20)
    (extra / "optimizer.pt").write_bytes(b"")  # a file the save never finished (not in the marker)
    assert "unexpected" in verify(extra, KEY)

    tampered = checkpoint(tmp_path, 30)
    marker = json.loads((tampered / MARKER).read_text())
    (tampered / "model.safetensors").write_bytes(b"\0" * 4096)
    import hashlib

    marker["files"]["model.safetensors"]["sha256"] = hashlib.sha256(b"\0" * 4096).hexdigest()
    (tampered / MARKER).write_text(json.dumps(marker))  # the hashes fit the files, but not the signature
    assert "signature" in verify(tampered, KEY)

    foreign = checkpoint(tmp_path, 40, key=b"someone else")
    assert "signature" in verify(foreign, KEY)
    assert [p.name for p in complete_checkpoints(tmp_path, KEY)] == []


def test_a_sizes_only_marker_is_not_trusted(tmp_path):
    """Version 1 markers (sizes, no hashes) cannot tell a same-size corruption: they are not resumed."""
    import hashlib
    import hmac

    folder = checkpoint(tmp_path, 10)
    files = {"model.safetensors": 4096, "sub/rng_state.pth": 100,
             "trainer_state.json": (folder / "trainer_state.json").stat().st_size}
    body = json.dumps({"step": 10, "files": files}, sort_keys=True).encode()
    (folder / MARKER).write_text(json.dumps({"step": 10, "files": files,
                                             "hmac": hmac.new(KEY, body, hashlib.sha256).hexdigest()}))
    assert "version" in verify(folder, KEY)
    assert latest_complete(tmp_path, KEY) is None


def test_the_newest_checkpoint_that_verifies_is_picked(tmp_path):
    for step in (10, 20, 30):
        checkpoint(tmp_path, step)
    (tmp_path / "checkpoint-30" / "model.safetensors").write_bytes(os.urandom(4096))  # same size
    assert [p.name for p in complete_checkpoints(tmp_path, KEY)] == ["checkpoint-20", "checkpoint-10"]


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "small", 1) as folder:
        yield folder


def test_a_marker_that_does_not_fit_on_the_disk_is_never_there(small_disk):
    folder = small_disk / "checkpoint-10"
    folder.mkdir()
    for i in range(2000):  # fill the disk with many small files: the marker listing them is bigger than what is left
        try:
            (folder / f"shard-{i:05d}.bin").write_bytes(os.urandom(400))
        except OSError:
            (folder / f"shard-{i:05d}.bin").unlink(missing_ok=True)
            break
    with pytest.raises(OSError) as info:
        mark_complete(folder, 10, KEY)
    assert info.value.errno == 28
    assert not (folder / MARKER).exists() and not (folder / (MARKER + ".tmp")).exists()
    assert latest_complete(small_disk, KEY) is None


# --- a real job -----------------------------------------------------------------------------------


def spec(max_steps: int) -> dict:
    return tiny_classification(max_steps=max_steps, logging_steps=1, save_strategy="steps", save_steps=10,
                               save_total_limit=4, lr_scheduler_type="constant", learning_rate=0.001)


def run_until_checkpoints(process_factory, data: Path, count: int) -> tuple[str, list[Path]]:
    """Start a long job, kill -9 its server once `count` checkpoints are complete; the complete ones, oldest first."""
    tiny.write_jsonl(data / "datasets" / "train.jsonl", tiny.sentiment_rows(32))
    server = process_factory(data)
    with tunewire.Client(server.address) as c:
        job = c.submit(spec(max_steps=60))
        seen = 0
        for event in c.stream_metrics(job.id):
            if isinstance(event.data, CheckpointSaved):
                seen += 1
                if seen == count:
                    break
    server.signal(signal.SIGKILL)
    server.wait()
    ckpts = data / "jobs" / job.id / "checkpoints"
    wait_for(lambda: not any(p.name.endswith(".tmp") for p in ckpts.rglob("*")), timeout=10)
    import time

    time.sleep(1)  # the worker dies with its server (PR_SET_PDEATHSIG): let it go before looking
    complete = sorted((p.parent for p in ckpts.glob(f"checkpoint-*/{MARKER}")), key=lambda p: int(p.name[11:]))
    assert len(complete) >= count
    return job.id, complete


def corrupt_header(folder: Path) -> None:
    path = folder / "model.safetensors"
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.write(b"\xff" * 64)
    assert path.stat().st_size == size


def resumed_run(process_factory, data: Path, job_id: str):
    again = process_factory(data)
    with tunewire.Client(again.address) as c:
        done = c.wait(job_id, raise_on_failure=False)
        events = list(c.stream_metrics(job_id))
    running = [i for i, e in enumerate(events) if isinstance(e.data, StateChange) and e.data.state == JobState.RUNNING]
    steps_after = [e.data.step for e in events[running[-1]:] if isinstance(e.data, TrainLog)]
    log = (data / "jobs" / job_id / "worker.log").read_text()
    return done, steps_after, log


@pytest.mark.slow
def test_a_same_size_corrupt_newest_checkpoint_is_skipped_for_the_one_before(process_factory, tmp_path):
    data = tmp_path / "d"
    job_id, complete = run_until_checkpoints(process_factory, data, 2)
    newest, previous = complete[-1], complete[-2]
    corrupt_header(newest)
    done, steps_after, log = resumed_run(process_factory, data, job_id)
    assert done.state == JobState.SUCCEEDED, done.error
    assert f"skipping {newest.name}: model.safetensors does not match its recorded sha256" in log
    assert f"resuming from {previous.name}" in log
    assert steps_after and min(steps_after) > int(previous.name[11:])  # neither from step 0 nor from newest


@pytest.mark.slow
def test_a_checkpoint_that_verifies_but_fails_to_load_falls_back(process_factory, tmp_path):
    """Content signed as it is (the marker cannot help) that Trainer cannot load: the one before is used."""
    data = tmp_path / "d"
    job_id, complete = run_until_checkpoints(process_factory, data, 2)
    newest, previous = complete[-1], complete[-2]
    corrupt_header(newest)
    mark_complete(newest, int(newest.name[11:]), load_or_create_key(data))  # as if saved broken
    assert is_complete(newest, load_or_create_key(data))
    done, steps_after, log = resumed_run(process_factory, data, job_id)
    assert done.state == JobState.SUCCEEDED, done.error
    assert f"{newest.name} failed to load" in log and f"falling back to {previous.name}" in log
    assert steps_after and min(steps_after) > int(previous.name[11:])
    assert done.attempts == 2  # the fallback happened within the attempt: no retry was spent on it
