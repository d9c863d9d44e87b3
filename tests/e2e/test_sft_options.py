"""SFT options through the real server, one job per family, all queued at once so the jobs overlap with
the warm worker's imports: LoRA chat with assistant-only loss and a merged copy; a chat template cloned
from another folder; a formatting template with completion-only loss, packing, bf16 weights and NEFTune
submitted from a YAML file by the CLI; prompt/completion columns packed on GPT-2. Then the refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import tunewire
from tests import tiny_lm
from tests.e2e.conftest import job_dir
from tunewire import JobState

HP = {"save_strategy": "no", "logging_steps": 2, "per_device_train_batch_size": 8}
CAT = [{"role": "user", "content": "what color is the cat?"}]
DOG = [{"role": "user", "content": "what color is the dog?"}]

LORA_CHAT = {
    "base_model": "tiny-llama",
    "sft": {"messages_field": "dialog", "assistant_only_loss": True, "max_length": 64, "save_merged_model": True},
    "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
             "bias": "none"},
    "train_dataset": {"file": {"path": "blue.jsonl"}},
    "hyperparameters": {**HP, "max_steps": 16, "learning_rate": 0.05},
}
CLONED = {
    "base_model": "tiny-llama-nochat",
    "sft": {"messages_field": "messages", "chat_template_source": "zephyr-template", "assistant_only_loss": True},
    "train_dataset": {"file": {"path": "chat.jsonl"}},
    "hyperparameters": {**HP, "max_steps": 2},
}
TEMPLATE_YAML = """\
base_model: tiny-llama
sft:
  formatting_template: "Question: {question}\\n### Answer: {answer}"
  response_template: "### Answer:"
  packing: true
  packing_strategy: bfd
  max_length: 96
  model_dtype: bfloat16
  neftune_noise_alpha: 5
train_dataset: {file: {path: qa.jsonl}}
hyperparameters: {max_steps: 3, logging_steps: 1, save_strategy: "no", per_device_train_batch_size: 2}
"""
GPT2_PACKED = {
    "base_model": "tiny-gpt2",
    "sft": {"prompt_field": "question", "completion_field": "answer", "packing": True, "max_length": 64},
    "train_dataset": {"file": {"path": "qa.jsonl"}, "max_samples": 16},
    "eval_dataset": {"file": {"path": "qa.jsonl"}, "max_samples": 8},  # evaluated each epoch by default
    "hyperparameters": {**HP, "num_train_epochs": 2},
}


def _cli(server, *args):
    env = {**os.environ, "TUNEWIRE_ADDRESS": server.address, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "tunewire.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def jobs(sft_server, sft_client, tmp_path_factory):
    """Queue the SDK jobs, then submit the YAML job through the CLI and watch it; wait for all."""
    rows = [{"dialog": [{"role": "user", "content": f"what color is the {a}?"}, {"role": "assistant", "content": "blue"}]}
            for a in tiny_lm.ANIMALS] * 4
    tiny_lm.write_jsonl(sft_server.settings.dataset_root / "blue.jsonl", rows)
    submitted = {name: sft_client.submit(spec) for name, spec in
                 (("lora_chat", LORA_CHAT), ("cloned", CLONED), ("gpt2_packed", GPT2_PACKED))}
    spec_file = tmp_path_factory.mktemp("spec") / "template.yaml"
    spec_file.write_text(TEMPLATE_YAML)
    watched = _cli(sft_server, "submit", str(spec_file), "--watch")
    done = {name: sft_client.wait(job.id, raise_on_failure=False) for name, job in submitted.items()}
    template_job = next(j for j in sft_client.list_jobs(limit=10) if j.spec.sft.formatting_template)
    done["template"] = sft_client.get(template_job.id)
    return done, watched


def meta_of(server, job) -> dict:
    return json.loads((job_dir(server, job.id) / "model" / "tunewire.json").read_text())


def test_every_job_succeeds(jobs):
    done, _ = jobs
    for name, job in done.items():
        assert job.state == JobState.SUCCEEDED, (name, job.error)


def test_lora_job_saves_adapter_and_merged_model_and_predicts_with_the_adapter(sft_server, sft_client, jobs):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job = jobs[0]["lora_chat"]
    model_dir = job_dir(sft_server, job.id) / "model"
    adapter = json.loads((model_dir / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"], adapter["bias"]) == (8, 16, 0.05, "none")
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert not (model_dir / "model.safetensors").exists()  # the adapter only...
    assert (model_dir / "merged" / "model.safetensors").is_file()  # ...and the merged copy asked for
    assert meta_of(sft_server, job)["training"]["assistant_only_loss"] is True

    # Served: the adapter on its base, as the same generator computes it here; and not the base alone.
    from tunewire_server.worker.inference.generation import LoadedGenerator

    requests = [{"conversations": [{"messages": CAT}]}, {"conversations": [{"messages": DOG}]},
                {"inputs": ["the red"], "generation": {"do_sample": True, "seed": "1", "max_new_tokens": 12}},
                {"inputs": ["the red"], "generation": {"do_sample": True, "seed": "2", "max_new_tokens": 12}}]
    adapted = LoadedGenerator(model_dir, meta_of(sft_server, job))
    base = LoadedGenerator(sft_server.settings.model_root / "tiny-llama", {"task": "sft"})
    served = []
    for r in requests:
        params = r.get("generation", {})
        inputs = r.get("inputs") or [m["messages"] for m in r["conversations"]]
        served.append(sft_client.predict(job.id, inputs, max_new_tokens=params.get("max_new_tokens", 8),
                                         do_sample=params.get("do_sample", False),
                                         seed=int(params["seed"]) if "seed" in params else None)[0].text)
    local = [adapted.predict({**r, "generation": {"max_new_tokens": 8, **r.get("generation", {})}})[0]["generation"]
             ["text"] for r in requests]
    plain = [base.predict({**r, "generation": {"max_new_tokens": 8, **r.get("generation", {})}})[0]["generation"]
             ["text"] for r in requests]
    assert served == local
    assert served != plain  # the adapter changes what the base model says

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok.apply_chat_template(CAT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(model_dir / "merged")(**ids).logits
        base_model = AutoModelForCausalLM.from_pretrained(sft_server.settings.model_root / "tiny-llama")
        with_adapter = PeftModel.from_pretrained(base_model, model_dir)(**ids).logits
    assert torch.allclose(merged, with_adapter, atol=1e-4)


def test_cloned_chat_template_is_saved_and_used_for_chat_predictions(sft_server, sft_client, jobs):
    job = jobs[0]["cloned"]
    model_dir = job_dir(sft_server, job.id) / "model"
    assert (model_dir / "chat_template.jinja").read_text() == tiny_lm.ZEPHYR_TEMPLATE
    assert "<|assistant|>" in (model_dir / "tokenizer.json").read_text()  # the source's tokens came along
    # the base model has no chat template: a chat prediction works only through the cloned one
    [p] = sft_client.predict(job.id, [CAT], max_new_tokens=4)
    assert p.num_tokens >= 1 and p.finish_reason in ("length", "eos")


def test_cli_submitted_template_job_packs_in_bfloat16_with_neftune(sft_server, sft_client, jobs):
    done, watched = jobs
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "SUCCEEDED" in watched.stdout
    job = done["template"]
    meta = meta_of(sft_server, job)
    assert meta["mode"] == "template_completion" and meta["training"]["completion_only_loss"] is True
    assert meta["training"]["packing"] == "bfd"
    assert meta["training"]["train_rows"] < meta["training"]["train_examples"]  # several examples per row
    assert meta["training"]["neftune_noise_alpha"] == 5
    config = json.loads((job_dir(sft_server, job.id) / "model" / "config.json").read_text())
    assert meta["model_dtype"] == "bfloat16" and config["dtype"] == "bfloat16"
    [p] = sft_client.predict(job.id, "Question: what color is the cat?\n### Answer:", max_new_tokens=4)
    assert p.num_tokens >= 1


def test_gpt2_may_pack_and_evaluates_each_epoch(sft_server, sft_client, jobs):
    job = jobs[0]["gpt2_packed"]
    meta = meta_of(sft_server, job)
    assert meta["training"]["packing"] == "bfd" and meta["training"]["completion_only_loss"] is True
    evals = [e.data for e in sft_client.stream_metrics(job.id) if isinstance(e.data, tunewire.EvalResult)]
    assert [round(x.epoch) for x in evals] == [1, 2]
    assert all({"loss", "mean_token_accuracy"} <= set(x.metrics) for x in evals)


@pytest.mark.parametrize("spec, field, words", [
    ({"base_model": "tiny-opt", "sft": {"packing": True}, "train_dataset": {"file": {"path": "text.jsonl"}}},
     "sft.packing", "attend to each other"),
    ({"base_model": "tiny-llama", "sft": {"formatting_template": "{question} {solution}"},
      "train_dataset": {"file": {"path": "qa.jsonl"}}}, "train_dataset", "row 1: column 'solution' is missing"),
    ({"base_model": "tiny-llama", "sft": {"messages_field": "question"},
      "train_dataset": {"file": {"path": "qa.jsonl"}}}, "train_dataset", "must be a list of {role, content}"),
    ({"base_model": "tiny-gpt2", "sft": {"messages_field": "messages"},
      "train_dataset": {"file": {"path": "chat.jsonl"}}}, "sft.messages_field", "no chat template"),
    ({"base_model": "tiny-llama-plainchat", "sft": {"messages_field": "messages", "assistant_only_loss": True},
      "train_dataset": {"file": {"path": "chat.jsonl"}}}, "sft.assistant_only_loss", "generation"),
    ({"base_model": "tiny-llama", "sft": {"text_field": "text"}, "lora": {"r": 4, "target_modules": ["c_attn"]},
      "train_dataset": {"file": {"path": "text.jsonl"}}}, "lora.target_modules[0]", "no module 'c_attn'"),
])
def test_bad_sft_options_are_refused_before_queueing(sft_client, spec, field, words):
    before = len(list(sft_client.list_jobs()))
    with pytest.raises(tunewire.InvalidArgumentError) as info:
        sft_client.submit(spec)
    found = {v.field: v.description for v in info.value.violations}
    assert field in found and words in found[field], found
    assert len(list(sft_client.list_jobs())) == before


def test_wrapped_packing_is_accepted_where_bfd_is_refused(sft_client):
    job = sft_client.submit({"base_model": "tiny-opt", "sft": {"packing": True, "packing_strategy": "wrapped"},
                             "train_dataset": {"file": {"path": "text.jsonl"}},
                             "hyperparameters": {"max_steps": 1, "save_strategy": "no"}})
    assert sft_client.wait(job.id, raise_on_failure=False).state == JobState.SUCCEEDED

