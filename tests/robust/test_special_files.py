"""Special files and swapped symlinks in the server's roots (issue 12, items 5 and 7), against a real server:
a FIFO, directory or device where a file is expected is refused at once (never opened for reading, which
would block a thread forever), and a dataset file swapped for a symlink out of the dataset root after the
job was accepted fails the job as the user's error without the outside file's content showing anywhere."""

from __future__ import annotations

import os
import shutil
import uuid

import pytest

import tunewire
from tests import tiny
from tests.support.waiting import wait_for

SPEC = {
    "base_model": "tiny-bert",
    "classification": {},
    "train_dataset": {"file": {"path": "train.jsonl"}},
    "hyperparameters": {"max_steps": 2, "save_strategy": "no", "per_device_train_batch_size": 4},
}
MARKER = "SECRET-MARKER-7f3a9c"


@pytest.fixture
def fifo_model(models_root):
    """A copy of tiny-bert under the (shared) model root, for a test to put a special file in."""
    name = f"special-{uuid.uuid4().hex[:8]}"
    shutil.copytree(models_root / "tiny-bert", models_root / name)
    yield name, models_root / name
    shutil.rmtree(models_root / name, ignore_errors=True)


def _refused(client, spec) -> str:
    """The message of the INVALID_ARGUMENT a submit gets, within the SDK's short deadline."""
    with pytest.raises(tunewire.InvalidArgumentError) as info:
        client.submit(spec, timeout=20)
    return str(info.value)


@pytest.mark.parametrize("kind", ["fifo", "directory", "device-symlink"])
def test_a_special_file_as_dataset_is_refused_at_once(server, client, kind):
    path = server.settings.dataset_root / "special.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:  # a device node inside the root, reached through a symlink that stays inside the root
        os.mknod(server.settings.dataset_root / "zero", 0o600 | 0o020000, os.makedev(1, 5))
        path.symlink_to("zero")
    spec = {**SPEC, "train_dataset": {"file": {"path": "special.jsonl"}}}
    for _ in range(10):  # more than the default executor's threads: none of them may be left blocked
        message = _refused(client, spec)
        assert "train_dataset.file.path" in message and "not a regular file" in message
    tiny.write_jsonl(server.settings.dataset_root / "train.jsonl", tiny.sentiment_rows(8))
    assert client.submit(SPEC, timeout=20).state == tunewire.JobState.QUEUED  # the server still serves


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json", "tokenizer.json", "vocab.txt"])
def test_a_fifo_among_a_model_folders_files_is_refused_at_once(server, client, fifo_model, name):
    model, folder = fifo_model
    (folder / name).unlink(missing_ok=True)
    os.mkfifo(folder / name)
    tiny.write_jsonl(server.settings.dataset_root / "train.jsonl", tiny.sentiment_rows(8))
    message = _refused(client, {**SPEC, "base_model": model})
    assert "base_model" in message and name in message and "not a regular file" in message


def test_a_dataset_swapped_for_a_symlink_out_of_the_root_after_submit_fails_without_leaking(server, client, tmp_path):
    root = server.settings.dataset_root
    tiny.write_jsonl(root / "train.jsonl", tiny.sentiment_rows(16))
    tiny.write_jsonl(root / "later.jsonl", tiny.sentiment_rows(16))
    secret = tmp_path / "outside.jsonl"
    secret.write_text("".join(f'{{"text": "{MARKER} {i}", "label": "{MARKER}"}}\n' for i in range(16)))
    first = client.submit({**SPEC, "hyperparameters": {**SPEC["hyperparameters"], "max_steps": 20}})
    second = client.submit({**SPEC, "train_dataset": {"file": {"path": "later.jsonl"}}})
    assert client.get(second.id).state == tunewire.JobState.QUEUED  # accepted, waiting behind the first
    (root / "later.jsonl").unlink()
    (root / "later.jsonl").symlink_to(secret)
    assert client.get(second.id).state == tunewire.JobState.QUEUED  # swapped before it started

    job = wait_for(lambda: (j := client.get(second.id)).state.terminal and j, timeout=300)
    assert job.state == tunewire.JobState.FAILED
    assert job.error.kind == "USER" and job.error.field == "train_dataset.file.path"
    assert "outside" in job.error.message
    events = list(client.stream_metrics(second.id, reconnect=False))
    text = repr(job) + repr(events)
    assert MARKER not in text
    assert client.wait(first.id).state == tunewire.JobState.SUCCEEDED


def test_the_worker_opens_dataset_files_under_their_root_at_read_time(tmp_path):
    """The worker's loader alone, on a plan as validation writes it: the same checks at the moment of reading."""
    from tunewire_server.worker.runtime import UserError
    from tunewire_server.worker.training import data

    root = tmp_path / "datasets"
    root.mkdir()
    tiny.write_jsonl(root / "d.jsonl", tiny.sentiment_rows(4))
    plan = {"kind": "file", "path": str(root / "d.jsonl"), "format": "jsonl", "root": str(root), "relative": "d.jsonl"}
    assert len(data.load(plan, "train_dataset", 0, tmp_path / "cache")) == 4
    secret = tmp_path / "secret.jsonl"
    secret.write_text(f'{{"text": "{MARKER}", "label": 0}}\n')
    for swap in ("symlink", "fifo"):
        (root / "d.jsonl").unlink()
        if swap == "symlink":
            (root / "d.jsonl").symlink_to(secret)
        else:
            os.mkfifo(root / "d.jsonl")
        with pytest.raises(UserError) as info:
            data.load(plan, "train_dataset", 0, tmp_path / "cache")
        assert info.value.field == "train_dataset.file.path" and MARKER not in info.value.message
    # a file the datasets library cannot parse: reported by type, never with the rows' text
    (root / "d.jsonl").unlink()
    (root / "d.jsonl").write_text(f'{{"text": "{MARKER}"}}\n{MARKER} not json\n')
    with pytest.raises(UserError) as info:
        data.load(plan, "train_dataset", 0, tmp_path / "cache2")
    assert MARKER not in info.value.message


def test_the_worker_links_the_file_it_opened_and_copies_when_the_path_moved_on(tmp_path, monkeypatch):
    """The private copy is a hard link when the path still names the opened file (no bytes copied), a copy of
    the opened file when the path was swapped between the open and the link, and one name per process (the
    ranks of a multi-process job load side by side)."""
    from tunewire_server.validation import paths
    from tunewire_server.worker.training import data

    root = tmp_path / "datasets"
    root.mkdir()
    tiny.write_jsonl(root / "d.jsonl", tiny.sentiment_rows(4))
    plan = {"kind": "file", "path": str(root / "d.jsonl"), "format": "jsonl", "root": str(root), "relative": "d.jsonl"}
    linked = data._private_copy(plan, "train_dataset", tmp_path / "cache")
    assert linked.name == f"train_dataset.{os.getpid()}.jsonl"
    assert os.stat(linked).st_ino == os.stat(root / "d.jsonl").st_ino
    linked.unlink()

    opened_text = (root / "d.jsonl").read_text()
    real_open_under = paths.open_under

    def open_then_swap(root_, relative):  # the path is swapped right after the safe open
        fd = real_open_under(root_, relative)
        (root / "d.jsonl").rename(root / "old.jsonl")
        (root / "d.jsonl").write_text(f'{{"text": "{MARKER}", "label": 0}}\n')
        return fd

    monkeypatch.setattr(data, "open_under", open_then_swap)
    copied = data._private_copy(plan, "train_dataset", tmp_path / "cache")
    assert os.stat(copied).st_ino != os.stat(root / "d.jsonl").st_ino
    assert copied.read_text() == opened_text and MARKER not in copied.read_text()
