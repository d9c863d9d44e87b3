"""models/listing.py: complete checkpoints with step, epoch, time, sizes and eval metrics; the final model."""

from __future__ import annotations

import os

from tests.unit.test_models_support import OPTIMIZER, Box
from tunewire_server.checkpoints import MARKER
from tunewire_server.jobs.states import JobState
from tunewire_server.models.listing import list_checkpoints
from tunewire_server.models.verified import VerifyCache


def test_lists_complete_checkpoints_oldest_first_with_their_facts(tmp_path):
    box = Box(tmp_path)
    job = box.job("j1", metrics={"accuracy": 0.9})
    box.checkpoint("j1", 2, epoch=0.5)
    box.checkpoint("j1", 4, epoch=1.0)
    box.checkpoint("j1", 6, complete=False)  # being written / half-written: never offered
    corrupted = box.checkpoint("j1", 8, epoch=2.0)
    (corrupted / "model.safetensors").write_bytes(b"x" * 3003)  # same size, other bytes
    box.event("j1", "eval_result", {"step": 2, "epoch": 0.5, "metrics": {"loss": 0.7, "accuracy": 0.5}}, at=100.0)
    box.event("j1", "checkpoint_saved", {"step": 2, "name": "checkpoint-2"}, at=101.0)
    box.event("j1", "eval_result", {"step": 4, "epoch": 1.0, "metrics": {"loss": 0.3, "accuracy": 0.75}}, at=200.0)
    box.event("j1", "checkpoint_saved", {"step": 4, "name": "checkpoint-4"}, at=201.0)
    box.event("j1", "checkpoint_saved", {"step": 4, "name": "checkpoint-4"}, at=301.0)  # a retried attempt
    box.final_model("j1", 6)

    listing = list_checkpoints(job, box.folder("j1"), box.store, VerifyCache(box.key))

    assert [c.step for c in listing.checkpoints] == [2, 4]
    first, second = listing.checkpoints
    assert (first.epoch, first.time, first.metrics) == (0.5, 101.0, {"loss": 0.7, "accuracy": 0.5})
    assert (second.epoch, second.time, second.metrics) == (1.0, 301.0, {"loss": 0.3, "accuracy": 0.75})
    on_disk = sum(p.stat().st_size for p in box.folder("j1").checkpoint(2).iterdir() if p.name != MARKER)
    assert first.size_bytes == on_disk
    assert first.download_bytes < first.size_bytes - len(OPTIMIZER)  # no optimizer/scheduler/rng state
    assert not first.adapter
    assert listing.final is not None
    assert (listing.final.step, listing.final.metrics, listing.final.adapter) == (6, {"accuracy": 0.9}, False)
    assert listing.final.time == job.ended_at


def test_epoch_and_time_fall_back_to_events_and_the_marker(tmp_path):
    box = Box(tmp_path)
    job = box.job("j1", JobState.FAILED)
    folder = box.checkpoint("j1", 3)  # no trainer_state.json, no checkpoint_saved event
    box.event("j1", "train_log", {"step": 3, "epoch": 0.75, "loss": 1.0})
    [ckpt] = list_checkpoints(job, box.folder("j1"), box.store, VerifyCache(box.key)).checkpoints
    assert ckpt.epoch == 0.75
    assert ckpt.time == os.stat(folder / MARKER).st_mtime
    assert ckpt.metrics == {}


def test_a_job_that_did_not_succeed_lists_checkpoints_but_no_final_model(tmp_path):
    box = Box(tmp_path)
    job = box.job("j1", JobState.CANCELLED)
    box.checkpoint("j1", 1, adapter=True)
    box.final_model("j1", 1)  # left over: not the result of a successful job
    listing = list_checkpoints(job, box.folder("j1"), box.store, VerifyCache(box.key))
    assert [c.adapter for c in listing.checkpoints] == [True]
    assert listing.final is None


def test_a_final_model_that_does_not_verify_is_not_listed(tmp_path):
    box = Box(tmp_path)
    job = box.job("j1")
    model = box.final_model("j1", 5)
    cache = VerifyCache(box.key)
    assert list_checkpoints(job, box.folder("j1"), box.store, cache).final is not None
    (model / "config.json").write_text('{"model_type": "bert"}')  # changed after it was verified and cached
    assert list_checkpoints(job, box.folder("j1"), box.store, cache).final is None


def test_an_adapter_reports_whether_its_merged_form_is_ready(tmp_path):
    box = Box(tmp_path)
    plain = box.job("plain")
    box.final_model("plain", 4, adapter=True)
    embedded = box.job("embedded")
    box.final_model("embedded", 4, adapter=True, embedded_merged=True)
    cache = VerifyCache(box.key)
    assert not list_checkpoints(plain, box.folder("plain"), box.store, cache).final.merged_ready
    assert list_checkpoints(embedded, box.folder("embedded"), box.store, cache).final.merged_ready


def test_no_folder_no_checkpoints(tmp_path):
    box = Box(tmp_path)
    job = box.job("j1", JobState.FAILED)
    listing = list_checkpoints(job, box.folder("nothing-here"), box.store, VerifyCache(box.key))
    assert (listing.checkpoints, listing.final) == ([], None)
