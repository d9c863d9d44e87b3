"""Merging a LoRA adapter: the worker's merge (real peft, tiny models) and the control plane's Merger (a real
merge worker process) when a merge fails: nothing that looks complete is left."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests import tiny
from tests.unit.test_models_support import Box
from tunewire_server.errors import FailedPrecondition, TunewireError
from tunewire_server.models.layout import Which
from tunewire_server.models.merge import MergeJob, Merger
from tunewire_server.models.verified import VerifyCache


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return tiny.build_tiny_bert(tmp_path_factory.mktemp("base") / "tiny-bert")


def _seq_cls_adapter(base, folder):
    """A trained-looking SEQ_CLS LoRA adapter on tiny-bert: random LoRA B weights and head, saved by peft."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=3)
    peft = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"]))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name or "classifier" in name:
                p.normal_(0, 0.5)
    peft.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return peft.eval()


def test_a_classifier_adapter_merges_with_its_labels_and_trained_head(bert, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunewire_server.worker.merge.merging import MergeRequest, merge

    peft = _seq_cls_adapter(bert, tmp_path / "adapter")
    files = merge(MergeRequest(str(tmp_path / "adapter"), str(bert), str(tmp_path / "out"),
                               label_names=("bad", "good", "meh")))
    assert "model.safetensors" in files and "tokenizer.json" in files and "config.json" in files
    assert not any(name.startswith("adapter_") for name in files)
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").eval()
    assert merged.config.id2label == {0: "bad", 1: "good", 2: "meh"}
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    batch = tok(["great pill", "awful headache and pain"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected, got = peft(**batch).logits, merged(**batch).logits
    assert expected.abs().max() > 0.1  # the head is not a fresh zero-ish one
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def _adapter_folder(box: Box, job_id: str):
    folder = box.final_model(job_id, 2, adapter=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "task_type": "CAUSAL_LM"}))
    return folder


@pytest.mark.parametrize(("base", "error", "message"), [
    ("/nonexistent/base", FailedPrecondition, "base model"),
    ("not-a-model-dir", TunewireError, "merge failed"),  # the worker fails in transformers: no traceback leaks
])
def test_a_failed_merge_leaves_nothing_that_looks_complete(tmp_path, base, error, message):
    box = Box(tmp_path)
    box.job("j1")
    adapter = _adapter_folder(box, "j1")
    merger = Merger(box.jobs_dir, box.key, VerifyCache(box.key), tmp_path / "cwd", env={"HF_HUB_OFFLINE": "1"})
    folder = box.folder("j1")

    async def go():
        return await asyncio.gather(*(merger.ensure(folder, Which(), 2, MergeJob(str(adapter), base))
                                      for _ in range(3)), return_exceptions=True)

    results = asyncio.run(go())
    assert all(isinstance(r, error) and message in str(r) for r in results), results
    assert merger.started == 1  # three requests, one merge
    left = sorted(p.name for p in folder.merged_root.iterdir())
    assert left == ["final.merge.log"]  # the temporary folder is gone; no merged/final
    assert len(str(results[0])) < 600


def test_deleting_a_job_stops_its_merge_and_nothing_comes_back(tmp_path):
    from tunewire_server.jobs.states import JobState
    from tunewire_server.models.layout import Form
    from tunewire_server.models.service import ModelService

    box = Box(tmp_path)
    job = box.job("j1", JobState.SUCCEEDED)
    _adapter_folder(box, "j1")
    service = ModelService(box.jobs_dir, box.root, box.store, tmp_path / "cwd")

    async def go():
        download = asyncio.create_task(service.manifest(job, Which(), Form.MERGED))
        while service.merger.started == 0:
            await asyncio.sleep(0.01)
        await service.delete(job)
        return await asyncio.gather(download, return_exceptions=True)

    [outcome] = asyncio.run(go())
    # Deleted while it merged (NotFound), or the merge of this fake adapter failed first: never a result,
    # never a CancelledError for a caller that did not cancel.
    assert isinstance(outcome, TunewireError), outcome
    assert not (box.jobs_dir / "j1").exists()  # the merge did not bring the folder back
    assert service.merger._running == {}
