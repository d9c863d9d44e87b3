"""Issue 14's equivalence test: models downloaded through models/ load with plain transformers / peft on a
machine without tunewire and give the same outputs as Predict on the server.

A classifier, a full SFT model, a LoRA adapter and its merged form are trained on the real server; each
download is written into a fresh folder from the manifest and the chunk reader (every sha256 checked),
loaded in this process with AutoModelFor... / PeftModel.from_pretrained (the tokenizer beside it), and
compared with Predict through the SDK: classifier probabilities within 1e-4, greedy generations identical,
and the merged model's logits within 1e-4 of the adapter on its base (the check that catches merge bugs that
silently corrupt weights). The ModelService runs in this process beside the server, on its folders and its
store, until the servicer serves DownloadModel itself.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from tests import tiny
from tests.e2e.conftest import run_job
from tunewire import JobState
from tunewire_server.models.layout import Form, Which
from tunewire_server.models.service import ModelService

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
    s = sft_server.settings
    store = sft_server.server.store
    return ModelService(s.jobs_dir, s.data_dir, store, s.worker_cwd, torch_threads=1)


def download(service: ModelService, job_id: str, dest: Path, which: Which | None = None,
             form: Form = Form.AS_TRAINED) -> list[str]:
    """Write a download into `dest` from the manifest and the chunks, as a client would: the file names."""
    job = service.store.get_job(job_id)
    manifest = asyncio.run(service.manifest(job, which or Which(), form))
    dest.mkdir(parents=True)
    digests = {}
    for chunk in service.chunks(manifest, chunk_size=64 * 1024):
        path = dest / chunk.path
        with open(path, "r+b" if chunk.offset else "wb") as f:
            f.seek(chunk.offset)
            f.write(chunk.data)
        digests.setdefault(chunk.path, hashlib.sha256()).update(chunk.data)
        if chunk.last:
            assert path.stat().st_size == chunk.size
    assert {f.path: f.sha256 for f in manifest.files} == {p: d.hexdigest() for p, d in digests.items()}
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


def test_a_downloaded_classifier_scores_as_predict_does(trained, service, sft_client, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    names = download(service, trained["classifier"], tmp_path / "clf")
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


def test_a_downloaded_full_sft_model_generates_as_predict_does(trained, service, sft_client, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    download(service, trained["full"], tmp_path / "full")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "full").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "full")
    assert [greedy(model, tokenizer, p) for p in PROMPTS] == served(sft_client, trained["full"])


def test_a_downloaded_adapter_and_its_merged_form_generate_as_predict_does(trained, service, sft_client,
                                                                          lm_root, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job_id = trained["lora"]
    names = download(service, job_id, tmp_path / "adapter")
    assert "adapter_model.safetensors" in names and "adapter_config.json" in names
    base = AutoModelForCausalLM.from_pretrained(lm_root / "tiny-llama").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "adapter")
    expected = served(sft_client, job_id)
    assert [greedy(base, tokenizer, p) for p in PROMPTS] != expected  # the adapter changed what it says
    adapter = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    assert [greedy(adapter, tokenizer, p) for p in PROMPTS] == expected

    async def two_requests():  # concurrent requests for the same merge wait for one merge
        job = service.store.get_job(job_id)
        return await asyncio.gather(*(service.manifest(job, Which(), Form.MERGED) for _ in range(2)))

    first, second = asyncio.run(two_requests())
    assert service.merger.started == 1 and first == second
    names = download(service, job_id, tmp_path / "merged", form=Form.MERGED)
    assert "model.safetensors" in names and not any(n.startswith("adapter_") for n in names)
    asyncio.run(service.manifest(service.store.get_job(job_id), Which(), Form.MERGED))
    assert service.merger.started == 1  # kept beside the adapter: not merged again
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    merged_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert [greedy(merged, merged_tokenizer, p) for p in PROMPTS] == expected
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, adapter(**batch).logits, atol=1e-4, rtol=0)


def test_a_lora_checkpoint_is_listed_and_downloads_as_an_adapter(trained, service, lm_root, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job = service.store.get_job(trained["lora"])
    listing = service.list_checkpoints(job)
    assert [c.step for c in listing.checkpoints] == [2, 4]
    assert all(c.adapter and c.epoch is not None and c.download_bytes < c.size_bytes for c in listing.checkpoints)
    assert listing.final is not None and listing.final.adapter and listing.final.merged_ready
    download(service, job.id, tmp_path / "ckpt", Which(2))
    base = AutoModelForCausalLM.from_pretrained(lm_root / "tiny-llama")
    PeftModel.from_pretrained(base, str(tmp_path / "ckpt"))  # loads with plain peft


def test_deleting_a_job_evicts_its_model_and_removes_everything(trained, sft_server, sft_client):
    inference = sft_server.server.manager.inference  # the server's InferenceClient, on the server's loop
    evicted: list[int] = []

    async def evict(path: str) -> None:
        evicted.append(await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(inference.evict(path), sft_server.loop)))

    s = sft_server.settings
    service = ModelService(s.jobs_dir, s.data_dir, sft_server.server.store, s.worker_cwd, evict=evict)
    job_id = trained["full"]
    served(sft_client, job_id)  # loaded in the inference worker
    assert asyncio.run(service.delete(service.store.get_job(job_id))) is True
    assert evicted == [1]
    assert not (s.jobs_dir / job_id).exists()
    assert asyncio.run(service.delete(service.store.get_job(job_id))) is False
    assert evicted == [1, 0]
