"""models/manifest.py: what a download sends, with each file's size and sha256, and the refusals."""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.test_models_support import Box, sha256
from tunewire_server.errors import FailedPrecondition, InvalidSpec, NotFound
from tunewire_server.jobs.states import JobState
from tunewire_server.models.layout import Form, Which
from tunewire_server.models.manifest import manifest_of, verified_source
from tunewire_server.models.service import ModelService
from tunewire_server.models.verified import VerifyCache

FROM_PRETRAINED = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]


def manifest(box: Box, job, which: Which, form: Form = Form.AS_TRAINED):
    service = ModelService(box.jobs_dir, box.root, box.store, box.root / "cwd")
    return asyncio.run(service.manifest(job, which, form))


def test_a_checkpoint_sends_what_from_pretrained_needs_with_sizes_and_hashes(tmp_path):
    box = Box(tmp_path)
    job = box.job("j1", JobState.RUNNING)  # a checkpoint of a job still training can be downloaded
    folder = box.checkpoint("j1", 4, epoch=1.0)
    m = manifest(box, job, Which(4))
    assert [f.path for f in m.files] == FROM_PRETRAINED  # no optimizer, scheduler, rng, trainer state, args, marker
    for f in m.files:
        assert (f.size, f.sha256) == ((folder / f.path).stat().st_size, sha256(folder / f.path))
    assert (m.step, m.root, m.total_bytes) == (4, folder, sum(f.size for f in m.files))


def test_the_final_model_leaves_out_the_servers_files_and_its_embedded_merged_form(tmp_path):
    box = Box(tmp_path)
    job = box.job("j1")
    model = box.final_model("j1", 9, adapter=True, embedded_merged=True)
    m = manifest(box, job, Which())
    assert [f.path for f in m.files] == ["adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
                                         "tokenizer_config.json"]
    assert m.step == 9
    merged = manifest(box, job, Which(), Form.MERGED)  # saved by the job itself (save_merged_model): no merge
    assert merged.root == model / "merged"
    assert [f.path for f in merged.files] == FROM_PRETRAINED
    assert all(f.sha256 == sha256(model / "merged" / f.path) for f in merged.files)


@pytest.mark.parametrize("state", [JobState.RUNNING, JobState.FAILED, JobState.CANCELLED, JobState.QUEUED])
def test_the_final_model_of_a_job_that_did_not_succeed_is_refused(tmp_path, state):
    box = Box(tmp_path)
    job = box.job("j1", state)
    box.final_model("j1", 3)
    with pytest.raises(FailedPrecondition, match="SUCCEEDED"):
        manifest(box, job, Which())


def test_missing_negative_and_incomplete_checkpoints_are_refused_naming_the_field(tmp_path):
    box = Box(tmp_path)
    job = box.job("j1")
    box.checkpoint("j1", 2, complete=False)
    with pytest.raises(InvalidSpec) as negative:
        manifest(box, job, Which(-1))
    assert negative.value.violations[0].field == "checkpoint"
    with pytest.raises(NotFound, match="checkpoint: .* no checkpoint at step 7"):
        manifest(box, job, Which(7))
    with pytest.raises(FailedPrecondition, match="checkpoint: .* not complete: it has no completeness marker"):
        manifest(box, job, Which(2))


def test_a_checkpoint_folder_that_is_a_symlink_is_not_a_checkpoint(tmp_path):
    box = Box(tmp_path)
    job = box.job("j1")
    elsewhere = box.checkpoint("j2", 5)  # another job's, complete and signed by this server
    box.folder("j1").checkpoints.mkdir(parents=True)
    box.folder("j1").checkpoint(5).symlink_to(elsewhere)
    with pytest.raises(NotFound):
        manifest(box, job, Which(5))


def test_merged_form_of_a_full_model_is_refused_naming_form(tmp_path):
    box = Box(tmp_path)
    job = box.job("j1")
    box.final_model("j1", 3)
    box.checkpoint("j1", 3)
    for which in (Which(), Which(3)):
        with pytest.raises(InvalidSpec) as refused:
            manifest(box, job, which, Form.MERGED)
        assert refused.value.violations[0].field == "form"


def test_a_file_added_after_marking_makes_the_folder_unsendable(tmp_path):
    box = Box(tmp_path)
    job = box.job("j1")
    model = box.final_model("j1", 3)
    (model / "extra.bin").write_bytes(b"not ours")
    with pytest.raises(FailedPrecondition, match="unexpected"):
        manifest(box, job, Which())


def test_manifest_of_takes_only_the_prefix_asked_for(tmp_path):
    box = Box(tmp_path)
    job = box.job("j1")
    box.final_model("j1", 3, adapter=True, embedded_merged=True)
    verified = verified_source(job, box.folder("j1"), Which(), VerifyCache(box.key))
    names = [f.path for f in manifest_of(job, Which(), Form.MERGED, verified, prefix="merged/").files]
    assert "adapter_config.json" not in names and "config.json" in names
