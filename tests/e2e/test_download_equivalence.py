"""Issue 14's equivalence test: models downloaded through the API load with plain transformers / peft on a
machine without tunewire and give the same outputs as Predict on the server.

A classifier, a full SFT model, a LoRA adapter and its merged form are trained on the real server; each is
downloaded with the SDK (`client.download`, DownloadModel: every sha256 checked) into a fresh folder, loaded
in this process with AutoModelFor... / PeftModel.from_pretrained (the tokenizer beside it), and compared
with Predict through the SDK: classifier probabilities within 1e-4, greedy generations identical, and the
merged model's logits within 1e-4 of the adapter on its base (the check that catches merge bugs that
silently corrupt weights).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import tiny
from tests.e2e.conftest import run_job
from tunewire import JobState

CLASSIFIER = {
    "base_model": "tiny-bert",
    "classification": {"max_length": 32},
    "train_dataset": {"file": {"path": "sentiment.jsonl"}},
    "hyperparameters": {"max_steps": 6, "learning_rate": 0.005, "per_device_train_batch_size": 8,
                        "logging_steps": 3, "save_strategy": "no"},
}
FULL_SFT = {
    "base_model": "tiny-llama",
    "sft": {"text_field": "text", "max_length": 32},
    "train_dataset": {"file": {"path": "text.jsonl"}},
    "hyperparameters": {"max_steps": 4, "learning_rate": 0.001, "per_device_train_batch_size": 8,
                        "logging_steps": 2, "save_strategy": "no"},
}
LORA_SFT = {
    "base_model": "tiny-llama",
    "sft": {"text_field": "text", "max_length": 32},
    "lora": {"r": 4, "alpha": 16, "target_modules": ["q_proj", "v_proj", "o_proj"]},
    "train_dataset": {"file": {"path": "text.jsonl"}},
    "hyperparameters": {"max_steps": 4, "learning_rate": 0.05, "per_device_train_batch_size": 8,
                        "logging_steps": 2, "save_strategy": "steps", "save_steps": 2},
}
TEXTS = ["great pill and i felt better", "awful headache and nausea", "the doctor said it works"]
PROMPTS = ["one two three", "the red cat", "what color is the dog?"]
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def trained(sft_server, sft_client):
    import torch

    torch.set_num_threads(1)
    tiny.write_jsonl(sft_server.settings.dataset_root / "sentiment.jsonl", tiny.sentiment_rows(48))
    jobs = {}
    for name, spec in (("classifier", CLASSIFIER), ("full", FULL_SFT), ("lora", LORA_SFT)):
        job, _ = run_job(sft_client, spec)
        assert job.state == JobState.SUCCEEDED, job.error
        jobs[name] = job.id
    return jobs


@pytest.fixture(scope="module")
def service(sft_server):
    """The server's ModelService (to count its merges)."""
    return sft_server.server.models


def download(client, job_id: str, dest: Path, checkpoint: int | None = None, merged: bool = False) -> list[str]:
    """Download through the SDK into `dest`, as a user would: the file names."""
    result = client.download(job_id, dest, checkpoint=checkpoint, merged=merged)
    assert result.path == dest and result.received_bytes == result.total_bytes
    assert {f.path: f.sha256 for f in result.files} == {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in dest.iterdir()}
    return sorted(p.name for p in dest.iterdir())


def greedy(model, tokenizer, prompt: str) -> str:
    """Greedy decoding as a plain transformers user writes it (the model's own generation_config.json says
    which tokens end a sequence), cut at the first of them."""
    import torch

    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    configured = model.generation_config.eos_token_id
    ends = {*(configured if isinstance(configured, list) else [configured]), tokenizer.eos_token_id} - {None}
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    new = out[0, ids.shape[1]:].tolist()
    cut = next((i for i, token in enumerate(new) if token in ends), len(new))
    return tokenizer.decode(new[:cut], skip_special_tokens=True)


def served(client, job_id: str) -> list[str]:
    return [p.text for p in client.predict(job_id, PROMPTS, max_new_tokens=NEW_TOKENS)]


def test_a_downloaded_classifier_scores_as_predict_does(trained, sft_client, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    names = download(sft_client, trained["classifier"], tmp_path / "clf")
    assert "model.safetensors" in names and "config.json" in names and "tokenizer.json" in names
    assert not {"training_args.bin", "tunewire.json", "tunewire-complete.json"} & set(names)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "clf").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "clf")
    assert set(model.config.id2label.values()) == {"negative", "positive"}
    with torch.no_grad():
        probs = torch.softmax(model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits, -1)
    predictions = sft_client.predict(trained["classifier"], TEXTS)
    for row, prediction in zip(probs.tolist(), predictions, strict=True):
        local = {model.config.id2label[i]: p for i, p in enumerate(row)}
        assert local == pytest.approx(prediction.scores, abs=1e-4)
        assert max(local, key=local.get) == prediction.label


def test_a_downloaded_full_sft_model_generates_as_predict_does(trained, sft_client, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    download(sft_client, trained["full"], tmp_path / "full")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "full").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "full")
    assert [greedy(model, tokenizer, p) for p in PROMPTS] == served(sft_client, trained["full"])


def test_a_downloaded_adapter_and_its_merged_form_generate_as_predict_does(trained, service, sft_client,
                                                                          lm_root, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job_id = trained["lora"]
    names = download(sft_client, job_id, tmp_path / "adapter")
    assert "adapter_model.safetensors" in names and "adapter_config.json" in names
    base = AutoModelForCausalLM.from_pretrained(lm_root / "tiny-llama").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "adapter")
    expected = served(sft_client, job_id)
    assert [greedy(base, tokenizer, p) for p in PROMPTS] != expected  # the adapter changed what it says
    adapter = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    assert [greedy(adapter, tokenizer, p) for p in PROMPTS] == expected

    with ThreadPoolExecutor(2) as pool:  # concurrent requests for the same merge wait for one merge
        first, second = pool.map(lambda name: download(sft_client, job_id, tmp_path / name, merged=True),
                                 ["merged", "merged-too"])
    assert service.merger.started == 1 and first == second
    names = first
    assert "model.safetensors" in names and not any(n.startswith("adapter_") for n in names)
    download(sft_client, job_id, tmp_path / "merged-again", merged=True)
    assert service.merger.started == 1  # kept beside the adapter: not merged again
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    merged_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert [greedy(merged, merged_tokenizer, p) for p in PROMPTS] == expected
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, adapter(**batch).logits, atol=1e-4, rtol=0)


def test_a_lora_checkpoint_is_listed_and_downloads_as_an_adapter(trained, sft_client, lm_root, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    listing = sft_client.list_checkpoints(trained["lora"])
    steps = [c.step for c in listing.checkpoints]
    assert steps[-1] == 4 and set(steps) <= {2, 4}  # checkpoint 2 unless retention pruned it
    assert all(c.adapter and c.epoch is not None and c.download_bytes < c.size_bytes for c in listing.checkpoints)
    assert listing.final is not None and listing.final.adapter and listing.final.merged_ready
    download(sft_client, trained["lora"], tmp_path / "ckpt", checkpoint=steps[0])
    base = AutoModelForCausalLM.from_pretrained(lm_root / "tiny-llama")
    PeftModel.from_pretrained(base, str(tmp_path / "ckpt"))  # loads with plain peft


def test_deleting_a_job_evicts_its_model_and_removes_everything(trained, sft_server, sft_client, service):
    evict = service._evict  # the server's InferenceClient.evict, on the server's loop: count what it drops
    evicted: list[int] = []

    async def counting(path: str) -> int:
        evicted.append(await evict(path))
        return evicted[-1]

    service._evict = counting
    try:
        s = sft_server.settings
        job_id = trained["full"]
        served(sft_client, job_id)  # loaded in the inference worker
        assert sft_client.delete_job(job_id) is True
        assert evicted == [1]
        assert not (s.jobs_dir / job_id).exists()
        assert sft_client.delete_job(job_id) is False
        assert evicted == [1]  # nothing left to evict
    finally:
        service._evict = evict
