"""Causal-LM supervised fine-tuning with TRL's SFTTrainer: the tutorial's options with today's API.

Data reaches SFTTrainer in one of TRL's own shapes, so TRL does the tokenizing, masking and packing:
- text: a "text" column (plain text, or a formatting template rendered here from several columns);
- prompt/completion: "prompt" and "completion" columns (the loss covers the completion only), from two
  columns or from a template cut at its response_template;
- conversational: a "messages" column rendered with the chat template (own or cloned), optionally with
  assistant-only loss.
"""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from tunewire.v1 import job_pb2
from tunewire_server import hyperparameters as definition
from tunewire_server.validation import sft as sft_checks
from tunewire_server.validation.dataset_scan import DatasetProblem
from tunewire_server.worker.protocol import MessageWriter
from tunewire_server.worker.runtime import UserError, checked_config, device_kind, torch_dtype
from tunewire_server.worker.training import data
from tunewire_server.worker.training.artifacts import save_final_model
from tunewire_server.worker.training.callback import Control, EventCallback, guarded
from tunewire_server.worker.training.trainer_args import checkpointing_arg, training_kwargs

log = logging.getLogger("tunewire.worker.sft")

MERGED_DIR = "merged"


def resolved(spec: job_pb2.JobSpec, plan: dict) -> dict:
    """The plan with every hyperparameter resolved (hyperparameters.resolve_plan: a plan stored by an older
    server gets the same defaults), and the "sft" entry's data facts for a plan written without them."""
    plan = definition.resolve_plan(spec, plan)
    plan["sft"] = {"mode": sft_checks.mode_of(spec.sft), "chat_template_source": None, **plan["sft"]}
    return plan


def sft_plan(spec: job_pb2.JobSpec, plan: dict) -> dict:
    """The plan's "sft" entry (sft_checks.scan), completed for a plan written without (all of) it."""
    return resolved(spec, plan)["sft"]


# --- data ---------------------------------------------------------------------------------------


def to_trl_dataset(ds: datasets.Dataset, task: job_pb2.SftTask, field: str, *, check_rows: bool) -> datasets.Dataset:
    """Turn the job's columns into the columns SFTTrainer knows (text | prompt+completion | messages)."""
    mode = sft_checks.mode_of(task)
    if check_rows:  # data the control plane could not read ahead (hub datasets)
        check = sft_checks.row_check(task)
        try:
            for i, row in enumerate(ds, start=1):
                check(i, row)
        except DatasetProblem as exc:
            raise UserError("INVALID_DATA", str(exc), field) from None
    drop = ds.column_names
    if mode == "text":
        column = task.text_field or "text"
        data.require_columns(ds, [column], field)
        return ds.map(lambda row: {"text": row[column]}, remove_columns=drop, desc=f"select {field} text")
    if mode == "prompt_completion":
        data.require_columns(ds, [task.prompt_field, task.completion_field], field)
        return ds.map(lambda row: {"prompt": row[task.prompt_field], "completion": row[task.completion_field]},
                      remove_columns=drop, desc=f"select {field} prompt/completion")
    if mode == "messages":
        data.require_columns(ds, [task.messages_field], field)

        def clean(row):
            return {"messages": [{"role": m["role"], "content": m["content"]} for m in row[task.messages_field]]}

        return ds.map(clean, remove_columns=drop, desc=f"select {field} messages")
    template = task.formatting_template
    try:
        if mode == "template":
            columns = sft_checks.parse_template(template)
            data.require_columns(ds, columns, field)
            return ds.map(lambda row: {"text": sft_checks.render(template, row, columns)},
                          remove_columns=drop, desc=f"format {field}")
        prompt, completion = sft_checks.split_template(template, task.response_template)
        p_cols, c_cols = sft_checks.parse_template(prompt), sft_checks.parse_template(completion)
        data.require_columns(ds, sorted(set(p_cols + c_cols)), field)
        return ds.map(lambda row: {"prompt": sft_checks.render(prompt, row, p_cols),
                                   "completion": sft_checks.render(completion, row, c_cols)},
                      remove_columns=drop, desc=f"format {field} prompt/completion")
    except DatasetProblem as exc:
        raise UserError("INVALID_DATA", str(exc), field) from None


# --- model --------------------------------------------------------------------------------------


def load_model(path: str, dtype: str):
    """The base model in the job's weight dtype (TRL would default to float32 too)."""
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype))
    except (OSError, ValueError) as exc:
        raise UserError("MODEL_UNAVAILABLE", f"cannot load {path!r} as a causal LM: {exc}"[:1000], "base_model") from None


def packing_leak(model, pad_token_id: int) -> str | None:
    """Why padding-free packed examples would see each other in `model`, or None when they do not.

    Packs [a, b] and [c, b] (a and c of equal length, different tokens) the way TRL's collator does and
    compares b's logits: with separated examples they are identical, whatever a and c hold."""
    vocab = model.get_input_embeddings().num_embeddings
    gen = torch.Generator().manual_seed(0)
    a, c = torch.randint(0, vocab, (2, 6), generator=gen).tolist()
    b = torch.randint(0, vocab, (5,), generator=gen).tolist()
    collator = DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=True)
    device = next(model.parameters()).device

    def logits_of_b(first: list[int]):
        batch = collator([{"input_ids": first + b, "seq_lengths": [len(first), len(b)]}])
        batch.pop("labels")
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with torch.no_grad():
            return model(**batch, use_cache=False).logits[0, len(first):].float()

    was_training = model.training
    model.eval()
    try:
        one, other = logits_of_b(a), logits_of_b(c)
    except Exception as exc:  # an architecture that cannot take packed input at all
        return f"it cannot run packed input ({type(exc).__name__}: {str(exc)[:300]})"
    finally:
        model.train(was_training)
    diff = (one - other).abs().max().item()
    if diff <= 1e-6 * max(1.0, one.abs().max().item()):
        return None
    return (f"its attention lets a packed example see the one before it (logits moved by {diff:.3g} when only "
            "the other example changed)")


def lora_config(lora: dict, model_type: str | None):
    """PEFT's LoraConfig from the plan's resolved "lora" entry."""
    from peft import LoraConfig
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULT_TARGETS

    targets = list(lora["target_modules"])
    if len(targets) == 1 and targets[0] == "all-linear":
        targets = "all-linear"
    elif not targets:
        targets = None if model_type in DEFAULT_TARGETS else "all-linear"
    return LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"], target_modules=targets,
                      bias=lora["bias"], task_type="CAUSAL_LM")


# --- trainer ------------------------------------------------------------------------------------


def sft_config_kwargs(spec: job_pb2.JobSpec, plan: dict, job_dir: Path) -> dict:
    """SFTConfig's arguments, from the plan. Precision and gradient checkpointing follow the device unless
    the spec says: bf16 mixed precision where the GPU supports it (never on a CPU), checkpointing on a GPU."""
    plan = resolved(spec, plan)
    sp = plan["sft"]
    kwargs = training_kwargs(plan, job_dir)
    kwargs.update(
        dataset_text_field="text",
        max_length=sp["max_length"],
        packing=sp["packing"],
        packing_strategy=sp["packing_strategy"] or "bfd",  # TRL's own default: unused without packing
        completion_only_loss=sp["completion_only_loss"],
        assistant_only_loss=sp["assistant_only_loss"],
        neftune_noise_alpha=sp["neftune_noise_alpha"] or None,  # 0 is off, which TRL spells None
        chat_template_path=sp["chat_template_source"],
    )
    return kwargs


def build_trainer(spec: job_pb2.JobSpec, plan: dict, job_dir: Path, callbacks=(),
                  control: Control | None = None) -> tuple[SFTTrainer, dict]:
    """The SFTTrainer for a job (with the NaN-loss watch when `control` is given), and the metadata
    saved next to its model."""
    task = spec.sft
    plan = resolved(spec, plan)
    sp = plan["sft"]
    seed = plan["hyperparameters"]["seed"]
    cache = job_dir / "cache"

    phase = control.enter if control is not None else (lambda *a: None)

    def load(key: str):
        dplan = plan[key]
        phase("data", key)
        return to_trl_dataset(data.load(dplan, key, seed, cache), task, key, check_rows=dplan["kind"] == "hub")

    train = load("train_dataset")
    evals = load("eval_dataset") if plan.get("eval_dataset") else None

    phase("model")
    checked_config(plan["base_model"])
    tokenizer = AutoTokenizer.from_pretrained(plan["base_model"])
    model = load_model(plan["base_model"], sp["model_dtype"])
    model_type = getattr(model.config, "model_type", None)
    if task.messages_field and not sp.get("chat_template_source") and tokenizer.chat_template is None:
        raise UserError("INVALID_OPTION", f"{plan['base_model']!r} has no chat template; set "
                        "sft.chat_template_source", "sft.messages_field")
    if sp["packing"] and sp["packing_strategy"] == "bfd":
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        leak = packing_leak(model, pad)
        if leak is not None:
            raise UserError("INVALID_OPTION", f"padding-free packing is unsafe for {model_type} models: {leak}. "
                            "Turn packing off, or set packing_strategy to WRAPPED if examples that share a row "
                            "may see each other", "sft.packing")

    phase("config")  # SFTTrainer also tokenizes here: failures raised inside `datasets` are the data's
    config = SFTConfig(**sft_config_kwargs(spec, plan, job_dir))
    peft_config = lora_config(plan["lora"], model_type) if plan["lora"] is not None else None
    try:
        trainer_cls = guarded(SFTTrainer, control) if control is not None else SFTTrainer
        trainer = trainer_cls(model=model, args=config, train_dataset=train, eval_dataset=evals,
                             processing_class=tokenizer, peft_config=peft_config, callbacks=list(callbacks))
    except ValueError as exc:
        text = str(exc)
        if "chat template is not training-compatible" in text:
            raise UserError("INVALID_OPTION", "the chat template has no {% generation %} markers, so assistant "
                            "tokens cannot be told apart; use a chat_template_source whose template has them",
                            "sft.assistant_only_loss") from None
        if "target modules" in text.lower():
            raise UserError("INVALID_OPTION", text[:1000], "lora.target_modules") from None
        raise
    except RuntimeError as exc:
        if "no assistant tokens" in str(exc):
            raise UserError("INVALID_DATA", "an example has no assistant tokens after rendering with the chat "
                            "template", "train_dataset") from None
        raise
    if len(trainer.train_dataset) == 0:
        raise UserError("INVALID_DATA", "no example is left to train on after tokenizing and truncating",
                        "train_dataset")
    log.info("sft: mode=%s rows=%d (from %d examples) max_length=%s packing=%s lora=%s dtype=%s",
             sp["mode"], len(trainer.train_dataset), len(train), sp["max_length"],
             sp.get("packing_strategy"), peft_config is not None, model.dtype)
    meta = {
        "task": "sft",
        "mode": sp["mode"],
        "adapter": peft_config is not None,
        "base_model": plan["base_model"],
        "model_dtype": sp["model_dtype"],
        "max_length": sp["max_length"],
        "merged": MERGED_DIR if (peft_config is not None and task.save_merged_model) else None,
        "vocab_size": trainer.model.get_input_embeddings().num_embeddings,
        "training": {
            "device": device_kind(),
            "bf16": bool(config.bf16),
            "fp16": bool(config.fp16),
            "gradient_checkpointing": bool(getattr(config, checkpointing_arg())),
            "packing": config.packing_strategy if config.packing else None,
            "neftune_noise_alpha": config.neftune_noise_alpha,
            "completion_only_loss": bool(getattr(trainer, "completion_only_loss", False)),
            "assistant_only_loss": bool(config.assistant_only_loss),
            "train_rows": len(trainer.train_dataset),
            "train_examples": len(train),
        },
    }
    return trainer, meta


def save(trainer: SFTTrainer, folder: str, meta: dict) -> None:
    """The model (or the LoRA adapter) and tokenizer; with save_merged_model, also the merged model."""
    trainer.save_model(folder)
    if meta["merged"]:
        merged = trainer.model.merge_and_unload()
        target = Path(folder) / meta["merged"]
        merged.save_pretrained(target)
        trainer.processing_class.save_pretrained(target)


def run(spec: job_pb2.JobSpec, plan: dict, job_dir: Path, out: MessageWriter, control: Control,
        resume_from: str | None = None) -> dict:
    datasets.disable_progress_bars()  # the job's log is for the job, not for one bar per dataset map
    callback = EventCallback(out, control)
    trainer, meta = build_trainer(spec, plan, job_dir, callbacks=[callback], control=control)
    trainer.train(resume_from_checkpoint=resume_from)
    if control.stop or control.checkpoint_and_stop:
        return {}
    control.enter("save")
    save_final_model(job_dir, lambda folder: save(trainer, folder, meta), meta, key=control.checkpoint_key,
                     step=trainer.state.global_step)
    return callback.last_eval
