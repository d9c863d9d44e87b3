"""What the training worker reports when a job fails (worker/failures.py, training.run_job): USER errors
for the job's own spec and data, SYSTEM errors for the machine, short messages that never quote a row.
Real exceptions from the real library calls, and the real runner on a tiny model, in process."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from google.protobuf import json_format

from tests.support.disk import tmpfs
from tunewire.spec import spec_from_dict
from tunewire_server.protocol import CheckpointSaved, ErrorMessage, JobError, JobRequest, Message
from tunewire_server.worker.training import classification, sft
from tunewire_server.worker.training.callback import Control
from tunewire_server.worker.training.failures import MAX_MESSAGE, classify
from tunewire_server.worker.training.main import run_job

SECRET = "Ophelia-7731 private diagnosis text"
KEY = "ab" * 32


class Recorder:
    """A MessageWriter that keeps the messages."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def send(self, message: Message) -> None:
        self.messages.append(message)

    def errors(self) -> list[JobError]:
        return [m.error for m in self.messages if isinstance(m, ErrorMessage)]


def run_classification(models_root: Path, job_dir: Path, dataset: dict, hp: dict | None = None):
    spec = {"base_model": "tiny-bert", "classification": {}, "train_dataset": {"file": {"path": "x.jsonl"}},
            "hyperparameters": {"max_steps": 2, "per_device_train_batch_size": 4, "save_strategy": "no",
                                "logging_steps": 1, **(hp or {})}}
    plan = {"task": "classification", "base_model": str(models_root / "tiny-bert"), "label_names": ["neg", "pos"],
            "train_dataset": dataset, "eval_dataset": None}
    request = JobRequest("j1", json_format.MessageToDict(spec_from_dict(spec)), plan, str(job_dir),
                         str(job_dir / "worker.log"), KEY)
    out = Recorder()
    code, _ = run_job(request, out, Control(), {"classification": classification.run, "sft": sft.run})
    return code, out


def jsonl(path: Path, lines: list[str]) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return {"kind": "file", "format": "jsonl", "path": str(path)}


# --- classing real exceptions ---------------------------------------------------------------------


def raised(fn) -> BaseException:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the exception itself is what is tested
        return exc
    raise AssertionError("no exception")


def test_a_seed_numpy_refuses_is_a_user_config_error():
    from transformers import set_seed

    exc = raised(lambda: set_seed(-(2**63)))
    error = classify(exc, "config")
    assert (error.kind, error.code) == ("USER", "INVALID_CONFIG")
    # the same ValueError in the training loop is not the user's: it is a fault of the worker's own tensors
    assert classify(exc, "train").kind == "SYSTEM"


def test_unparseable_json_is_user_data_and_names_the_row_not_its_text(tmp_path):
    import datasets

    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine", "label": "pos"}\n{"text": "' + SECRET + '", "label": \n')
    exc = raised(lambda: datasets.load_dataset("json", data_files=str(path), split="train",
                                               cache_dir=str(tmp_path / "c")))
    error = classify(exc, "data", field="train_dataset")
    assert (error.kind, error.code, error.field) == ("USER", "INVALID_DATA", "train_dataset")
    assert "row" in error.message and SECRET not in error.message


def test_a_model_without_the_task_head_is_a_user_error(tmp_path):
    from transformers import AutoModelForSequenceClassification, CLIPVisionConfig

    CLIPVisionConfig(hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1
                     ).save_pretrained(tmp_path)
    exc = raised(lambda: AutoModelForSequenceClassification.from_pretrained(tmp_path))
    error = classify(exc, "model")
    assert (error.kind, error.code, error.field) == ("USER", "MODEL_UNSUPPORTED", "base_model")
    missing = raised(lambda: AutoModelForSequenceClassification.from_pretrained(tmp_path / "nothing-here"))
    error = classify(missing, "model")
    assert (error.kind, error.code) == ("USER", "MODEL_UNAVAILABLE")


def test_machine_faults_stay_system_whatever_the_phase(tmp_path):
    import torch

    oom = raised(lambda: torch.empty(2**60, dtype=torch.uint8))
    assert (classify(oom, "data").kind, classify(oom, "data").code) == ("SYSTEM", "OUT_OF_MEMORY")
    eio = OSError(errno.EIO, "Input/output error")
    assert classify(eio, "data").kind == "SYSTEM"
    full = OSError(errno.ENOSPC, "No space left on device")
    assert (classify(full, "data").kind, classify(full, "data").code) == ("SYSTEM", "DISK_FULL")


def test_messages_are_bounded():
    error = classify(RuntimeError("x" * 100_000), "train")
    assert error.kind == "SYSTEM" and len(error.message) <= MAX_MESSAGE


# --- the real runner ------------------------------------------------------------------------------


def test_a_worker_data_failure_is_one_user_error_without_the_rows_text(models_root, tmp_path):
    """A file that passed submit-time checks and was changed before the job ran (issue 12, items 7 and 8)."""
    dataset = jsonl(tmp_path / "data" / "x.jsonl",
                    [json.dumps({"text": "fine", "label": "pos"}), '{"text": "' + SECRET + '", "label": '])
    code, out = run_classification(models_root, tmp_path / "job", dataset)
    [error] = out.errors()
    assert code == 1
    assert (error.kind, error.code) == ("USER", "INVALID_DATA") and error.field.startswith("train_dataset")
    assert SECRET not in error.message and "Ophelia" not in error.message


def test_a_label_that_is_data_is_never_quoted(models_root, tmp_path):
    rows = [{"text": "fine", "label": "pos"}, {"text": "also fine", "label": SECRET}]
    code, out = run_classification(models_root, tmp_path / "job", jsonl(tmp_path / "x.jsonl", map(json.dumps, rows)))
    [error] = out.errors()
    assert (error.kind, error.code) == ("USER", "INVALID_DATA")
    assert "row 2" in error.message and "Ophelia" not in error.message


def test_a_seed_numpy_refuses_fails_in_the_worker_as_a_user_error(models_root, tmp_path):
    rows = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}] * 4
    code, out = run_classification(models_root, tmp_path / "job", jsonl(tmp_path / "x.jsonl", map(json.dumps, rows)),
                                   hp={"seed": -(2**63)})
    [error] = out.errors()
    assert (error.kind, error.code) == ("USER", "INVALID_CONFIG")


# --- a full disk ----------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (the tests run as root, as the rules allow)."""
    with tmpfs(tmp_path / "small", 2) as folder:
        yield folder


def test_a_final_save_on_a_full_disk_is_disk_full_and_leaves_no_model(models_root, small_disk):
    from transformers import AutoModelForSequenceClassification

    from tunewire_server.checkpoints import MARKER
    from tunewire_server.worker.training.artifacts import MODEL_DIR, save_final_model

    model = AutoModelForSequenceClassification.from_pretrained(models_root / "tiny-bert", num_labels=2)
    big = model.resize_token_embeddings(20_000)  # about 5 MB of weights: more than the disk holds
    assert big is not None
    exc = raised(lambda: save_final_model(small_disk, model.save_pretrained, {"task": "classification"},
                                          key=bytes.fromhex(KEY)))
    error = classify(exc, "save", save_dir=small_disk)
    assert (error.kind, error.code) == ("SYSTEM", "DISK_FULL")
    assert not (small_disk / MODEL_DIR).exists() and not (small_disk / (MODEL_DIR + ".partial")).exists()
    assert not list(small_disk.rglob(MARKER))


def test_a_checkpoint_save_on_a_full_disk_is_disk_full_and_leaves_no_complete_checkpoint(models_root, tmp_path):
    """The job's checkpoints folder is a 64 KiB tmpfs: the data fit, the first checkpoint does not."""
    from tunewire_server.checkpoints import MARKER, latest_complete

    job_dir = tmp_path / "job"
    checkpoints = job_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    with tmpfs(checkpoints, "64k"):
        rows = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}] * 4
        code, out = run_classification(models_root, job_dir, jsonl(tmp_path / "x.jsonl", map(json.dumps, rows)),
                                       hp={"save_strategy": "steps", "save_steps": 1})
        [error] = out.errors()
        assert code == 1 and (error.kind, error.code) == ("SYSTEM", "DISK_FULL")
        assert len(error.message) <= MAX_MESSAGE
        assert not list(checkpoints.rglob(MARKER)) and latest_complete(checkpoints, bytes.fromhex(KEY)) is None
        assert not list(checkpoints.glob("checkpoint-*"))  # the half-written one was removed
        assert not any(isinstance(m, CheckpointSaved) for m in out.messages)
