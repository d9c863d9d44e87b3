"""The SFT worker's pieces on tiny local models, in process (no gRPC): what each option does to the data
SFTTrainer trains on (masks, truncation, packing), to the model (dtype, LoRA, NEFTune) and to the
training arguments (precision and checkpointing from the device)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from tests import tiny_lm
from tunewire.spec import spec_from_dict
from tunewire_server.validation import sft as validation_sft
from tunewire_server.worker.runtime import UserError
from tunewire_server.worker.training import sft, trainer_args


@pytest.fixture(scope="module")
def root(models_root):
    return tiny_lm.ensure_built(models_root)


def make_trainer(root, tmp_path, sft_options: dict, rows: list[dict], *, model: str = "tiny-llama",
                 lora: dict | None = None, hp: dict | None = None, kind: str = "inline"):
    spec = spec_from_dict({
        "base_model": model, "sft": sft_options, "train_dataset": {"inline": {"rows": [{}]}},
        "hyperparameters": {"max_steps": 1, "save_strategy": "no", "logging_steps": 1, "learning_rate": 0.01,
                            "per_device_train_batch_size": 4, **(hp or {})},
        **({"lora": lora} if lora else {}),
    })
    sp = sft.sft_plan(spec, {})
    if spec.sft.chat_template_source:
        sp["chat_template_source"] = str(root / spec.sft.chat_template_source)
    plan = {"task": "sft", "base_model": str(root / model), "sft": sp,
            "train_dataset": {"kind": kind, "rows": rows}, "eval_dataset": None}
    return sft.build_trainer(spec, plan, tmp_path)


def segments(trainer, example) -> tuple[list[str], list[str]]:
    """The decoded runs of tokens that count in the loss, and of those masked out (-100)."""
    tok = trainer.processing_class
    kept, masked, run, run_kept = [], [], [], None
    for token, label in zip(example["input_ids"], example["labels"], strict=True):
        is_kept = label != -100
        if is_kept:
            assert label == token
        if run and is_kept != run_kept:
            (kept if run_kept else masked).append(tok.decode(run))
            run = []
        run.append(token)
        run_kept = is_kept
    (kept if run_kept else masked).append(tok.decode(run))
    return kept, masked


# --- what the loss covers ------------------------------------------------------------------------


def test_prompt_completion_masks_the_prompt(root, tmp_path):
    trainer, meta = make_trainer(root, tmp_path, {"prompt_field": "question", "completion_field": "answer"},
                                 [{"question": "what color is the fox?", "answer": "teal", "x": 1}])
    kept, masked = segments(trainer, trainer.train_dataset[0])
    assert kept == ["teal</s>"] and masked == ["<s>what color is the fox?"]
    assert meta["training"]["completion_only_loss"] is True


def test_completion_only_loss_off_trains_on_the_prompt_too(root, tmp_path):
    trainer, _ = make_trainer(root, tmp_path, {"prompt_field": "question", "completion_field": "answer",
                                               "completion_only_loss": False},
                              [{"question": "what color is the fox?", "answer": "teal"}])
    assert -100 not in trainer.train_dataset[0]["labels"]


def test_template_with_response_template_masks_up_to_the_marker(root, tmp_path):
    trainer, _ = make_trainer(root, tmp_path, {"formatting_template": "Question: {question}\n### Answer: {answer}",
                                               "response_template": "### Answer:"},
                              [{"question": "what color is the cat?", "answer": "gray"}])
    kept, masked = segments(trainer, trainer.train_dataset[0])
    assert kept == [" gray</s>"] and masked == ["<s>Question: what color is the cat?\n### Answer:"]


def test_template_without_response_template_builds_one_text_from_several_columns(root, tmp_path):
    trainer, _ = make_trainer(root, tmp_path, {"formatting_template": "{animal} is {answer}."},
                              [{"animal": "owl", "answer": "gold", "question": "unused"}])
    ex = trainer.train_dataset[0]
    assert trainer.processing_class.decode(ex["input_ids"]) == "<s>owl is gold.</s>"
    assert -100 not in ex["labels"]


def test_chat_assistant_only_loss_masks_everything_but_assistant_turns(root, tmp_path):
    messages = [{"role": "system", "content": "you are fine"}, {"role": "user", "content": "what color is the owl?"},
                {"role": "assistant", "content": "gold"}, {"role": "user", "content": "thanks"},
                {"role": "assistant", "content": "ok"}]
    trainer, _ = make_trainer(root, tmp_path, {"messages_field": "dialog", "assistant_only_loss": True},
                              [{"dialog": messages}])
    kept, masked = segments(trainer, trainer.train_dataset[0])
    assert kept == ["gold<|im_end|>", "ok<|im_end|>"]
    assert masked[0].startswith("<|im_start|>system\nyou are fine") and "thanks" in masked[1]
    # without the option every token counts
    trainer, _ = make_trainer(root, tmp_path, {"messages_field": "dialog"}, [{"dialog": messages}])
    assert -100 not in trainer.train_dataset[0]["labels"]


def test_cloned_chat_template_renders_and_masks_with_the_source_template(root, tmp_path):
    trainer, meta = make_trainer(root, tmp_path, {"messages_field": "messages", "assistant_only_loss": True,
                                                  "chat_template_source": "zephyr-template"},
                                 tiny_lm.chat_rows(1, seed=3), model="tiny-llama-nochat")
    tok = trainer.processing_class
    assert tok.chat_template == tiny_lm.ZEPHYR_TEMPLATE
    assert "<|assistant|>" in tok.get_vocab()
    assert meta["vocab_size"] == trainer.model.get_input_embeddings().num_embeddings >= len(tok) > 420
    kept, masked = segments(trainer, trainer.train_dataset[0])
    assert len(kept) == 2 and kept[1] == "ok</s>" and kept[0].endswith("</s>")
    assert any("<|user|>" in m for m in masked)


def test_max_length_truncates(root, tmp_path):
    long = {"text": " ".join(["the red cat eats the dog."] * 20)}
    trainer, _ = make_trainer(root, tmp_path, {"text_field": "text", "max_length": 16}, [long, {"text": "hi"}])
    lengths = [len(x["input_ids"]) for x in trainer.train_dataset]
    assert lengths[0] == 16 and lengths[1] < 16
    trainer, _ = make_trainer(root, tmp_path, {"text_field": "text"}, [long])
    assert len(trainer.train_dataset[0]["input_ids"]) > 100  # the default (the model's 256) keeps it whole


# --- packing -------------------------------------------------------------------------------------


def test_bfd_packing_puts_several_examples_in_a_row_that_stay_apart(root, tmp_path):
    rows = tiny_lm.text_rows(24)
    trainer, meta = make_trainer(root, tmp_path, {"text_field": "text", "packing": True, "max_length": 64}, rows)
    data = trainer.train_dataset
    assert len(data) < len(rows) and meta["training"]["train_rows"] == len(data)
    assert max(len(x["seq_lengths"]) for x in data) >= 2
    assert all(sum(x["seq_lengths"]) == len(x["input_ids"]) <= 64 for x in data)
    batch = trainer.data_collator([data[0]])
    positions = batch["position_ids"][0].tolist()
    assert positions.count(0) == len(data[0]["seq_lengths"])  # positions restart for each example
    starts = [i for i, p in enumerate(positions) if p == 0]
    assert all(batch["labels"][0, i] == -100 for i in starts)  # no example predicts across a boundary
    assert "attention_mask" not in batch  # padding-free: the position_ids keep examples apart


def test_wrapped_packing_cuts_one_stream_into_full_rows(root, tmp_path):
    rows = tiny_lm.text_rows(24)
    trainer, meta = make_trainer(root, tmp_path, {"text_field": "text", "packing": True,
                                                  "packing_strategy": "wrapped", "max_length": 32}, rows)
    lengths = [len(x["input_ids"]) for x in trainer.train_dataset]
    assert set(lengths[:-1]) == {32} and lengths[-1] <= 32 and len(lengths) < len(rows)
    assert "seq_lengths" not in trainer.train_dataset.column_names
    assert meta["training"]["packing"] == "wrapped"


def test_packing_leak_probe_matches_the_control_plane_list(root):
    for name, leaks in (("tiny-llama", False), ("tiny-gpt2", False), ("tiny-opt", True)):
        model = sft.load_model(str(root / name), "float32")
        problem = sft.packing_leak(model, 0)
        assert (problem is not None) == leaks, (name, problem)
        assert (model.config.model_type in validation_sft.PACKING_LEAKS) == leaks


def test_worker_refuses_bfd_packing_on_a_leaking_model(root, tmp_path):
    with pytest.raises(UserError) as info:
        make_trainer(root, tmp_path, {"text_field": "text", "packing": True}, tiny_lm.text_rows(4), model="tiny-opt")
    assert info.value.field == "sft.packing" and "attention" in info.value.message


# --- the model -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, dtype", [("float32", torch.float32), ("bfloat16", torch.bfloat16),
                                         ("float16", torch.float16)])
def test_model_loads_in_the_requested_dtype(root, name, dtype):
    model = sft.load_model(str(root / "tiny-llama"), name)
    assert {p.dtype for p in model.parameters()} == {dtype}


def test_bfloat16_job_trains_in_bfloat16(root, tmp_path):
    trainer, meta = make_trainer(root, tmp_path, {"text_field": "text", "model_dtype": "bfloat16"},
                                 tiny_lm.text_rows(4))
    assert trainer.model.dtype == torch.bfloat16 and meta["model_dtype"] == "bfloat16"
    trainer.train()
    assert torch.isfinite(torch.tensor(trainer.state.log_history[0]["loss"]))


def test_lora_options_reach_peft(root, tmp_path):
    trainer, meta = make_trainer(root, tmp_path, {"text_field": "text"}, tiny_lm.text_rows(4),
                                 lora={"r": 4, "alpha": 12, "dropout": 0.1, "target_modules": ["q_proj", "o_proj"]})
    config = trainer.model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout, config.bias) == (4, 12, 0.1, "none")
    assert set(config.target_modules) == {"q_proj", "o_proj"} and meta["adapter"] is True
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert any(".o_proj.lora_A" in n for n in trainable) and not any("v_proj" in n for n in trainable)
    # defaults: alpha 2r, PEFT's modules for the architecture, learning rate 2e-4
    trainer, _ = make_trainer(root, tmp_path, {"text_field": "text"}, tiny_lm.text_rows(4), lora={"r": 2},
                              hp={"learning_rate": None})
    config = trainer.model.peft_config["default"]
    assert config.lora_alpha == 4 and set(config.target_modules) == {"q_proj", "v_proj"}
    assert trainer.args.learning_rate == trainer_args.DEFAULT_LORA_LR


def test_lora_bias_option_trains_biases(root, tmp_path):
    def trainable_biases(bias: str) -> set[str]:
        trainer, _ = make_trainer(root, tmp_path, {"text_field": "text"}, tiny_lm.text_rows(4), model="tiny-gpt2",
                                  lora={"r": 2, "target_modules": ["c_attn"], "bias": bias})
        return {n for n, p in trainer.model.named_parameters() if p.requires_grad and n.endswith(".bias")}

    assert trainable_biases("none") == set()
    assert any("c_attn.base_layer.bias" in n for n in trainable_biases("lora_only"))
    everything = trainable_biases("all")
    assert any("mlp.c_fc.bias" in n for n in everything)


def test_lora_job_saves_the_adapter_and_a_merged_model_that_agree(root, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    trainer, meta = make_trainer(root, tmp_path, {"text_field": "text", "save_merged_model": True},
                                 tiny_lm.text_rows(8), lora={"r": 4}, hp={"max_steps": 3, "learning_rate": 0.05})
    trainer.train()
    out = tmp_path / "saved"
    sft.save(trainer, str(out), meta)
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["base_model_name_or_path"] == str(root / "tiny-llama")
    assert not (out / "model.safetensors").exists() and (out / "merged" / "model.safetensors").is_file()
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    base = AutoModelForCausalLM.from_pretrained(root / "tiny-llama")
    with torch.no_grad():
        plain = base(ids).logits
        adapted = PeftModel.from_pretrained(base, out).eval()(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out / "merged")(ids).logits
    assert not torch.allclose(plain, adapted, atol=1e-4)  # the adapter learnt something
    assert torch.allclose(adapted, merged, atol=1e-4)


def test_neftune_adds_noise_to_the_embeddings_while_training(root, tmp_path):
    def first_loss(alpha: float) -> float:
        trainer, meta = make_trainer(root, tmp_path, {"text_field": "text", "neftune_noise_alpha": alpha},
                                     tiny_lm.text_rows(8), hp={"seed": 7})
        assert meta["training"]["neftune_noise_alpha"] == (alpha or None)
        trainer.train()
        return trainer.state.log_history[0]["loss"]

    plain = first_loss(0)
    assert first_loss(0) == plain  # training is deterministic...
    assert abs(first_loss(50) - plain) > 1e-4  # ...so the difference is NEFTune's noise


# --- training arguments from the device ----------------------------------------------------------


def _kwargs(tmp_path, **hp):
    spec = spec_from_dict({"base_model": "m", "sft": {"max_length": 32}, "train_dataset": {"inline": {"rows": [{}]}},
                           "hyperparameters": hp})
    return sft.sft_config_kwargs(spec, {"task": "sft"}, tmp_path)


def test_a_cpu_gets_fp32_and_no_gradient_checkpointing_by_default(tmp_path):
    kwargs = _kwargs(tmp_path)
    assert (kwargs["bf16"], kwargs["fp16"], kwargs[trainer_args.checkpointing_arg()]) == (False, False, False)
    assert kwargs["max_length"] == 32 and kwargs["packing"] is False
    assert kwargs["dataloader_pin_memory"] is False  # no accelerator to copy to (torch warns otherwise)


@pytest.mark.parametrize("asked", [None, True, False])
def test_gradient_checkpointing_reaches_sft_config_under_its_current_name(tmp_path, asked):
    """transformers renamed the argument (activation_checkpointing); the old one warns on every job. TRL's
    default (on) must not win over the job's setting or tunewire's CPU default (off)."""
    from trl import SFTConfig

    hp = {} if asked is None else {"gradient_checkpointing": asked}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = SFTConfig(**_kwargs(tmp_path, **hp))
    assert not [w for w in caught if "checkpointing" in str(w.message)]
    assert config.gradient_checkpointing is bool(asked)  # on a CPU: off unless asked for
    assert getattr(config, trainer_args.checkpointing_arg()) is bool(asked)


def test_a_bf16_gpu_gets_bf16_and_gradient_checkpointing_by_default(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_args, "bf16_supported", lambda: True)
    monkeypatch.setattr(trainer_args, "device_kind", lambda: "cuda")
    monkeypatch.setattr(sft, "device_kind", lambda: "cuda")
    checkpointing = trainer_args.checkpointing_arg()
    kwargs = _kwargs(tmp_path)
    assert (kwargs["bf16"], kwargs[checkpointing]) == (True, True)
    assert kwargs["dataloader_pin_memory"] is True
    kwargs = _kwargs(tmp_path, precision="fp32", gradient_checkpointing=False)
    assert (kwargs["bf16"], kwargs[checkpointing]) == (False, False)
    monkeypatch.setattr(trainer_args, "bf16_supported", lambda: False)  # a GPU without bf16 (e.g. a T4)
    assert _kwargs(tmp_path)["bf16"] is False


# --- data the control plane could not read ahead --------------------------------------------------


def test_hub_rows_are_checked_in_the_worker():
    import datasets

    task = spec_from_dict({"sft": {"messages_field": "messages"}}).sft
    rows = [{"messages": [{"role": "user", "content": "hi"}]}, {"messages": [{"role": "x", "content": "y"}]}]
    with pytest.raises(UserError) as info:
        sft.to_trl_dataset(datasets.Dataset.from_list(rows), task, "train_dataset", check_rows=True)
    assert info.value.field == "train_dataset" and "row 2" in info.value.message


def test_missing_columns_are_a_user_error(root, tmp_path):
    with pytest.raises(UserError) as info:
        make_trainer(root, tmp_path, {"prompt_field": "q", "completion_field": "a"}, [{"q": "x"}])
    assert info.value.field == "train_dataset" and "'a' is missing" in info.value.message
