"""Map a JobSpec's hyperparameters onto TrainingArguments / SFTConfig keyword arguments."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from tunewire.v1 import job_pb2
from tunewire_server.worker.runtime import UserError, bf16_supported, device_kind

EVAL = {job_pb2.EVAL_STRATEGY_NO: "no", job_pb2.EVAL_STRATEGY_EPOCH: "epoch", job_pb2.EVAL_STRATEGY_STEPS: "steps"}
SAVE = {job_pb2.SAVE_STRATEGY_NO: "no", job_pb2.SAVE_STRATEGY_EPOCH: "epoch", job_pb2.SAVE_STRATEGY_STEPS: "steps"}
DEFAULT_LR = 5e-5
DEFAULT_LORA_LR = 2e-4


def seed_of(spec: job_pb2.JobSpec) -> int:
    hp = spec.hyperparameters
    return hp.seed if hp.HasField("seed") else 42


def precision_kwargs(spec: job_pb2.JobSpec) -> dict:
    """bf16 where the device supports it unless the spec says otherwise; a CPU never gets it by default."""
    p = spec.hyperparameters.precision
    if p == job_pb2.PRECISION_FP16:
        if device_kind() != "cuda":
            raise UserError("UNSUPPORTED_PRECISION", "fp16 mixed precision needs a GPU", "hyperparameters.precision")
        return {"fp16": True, "bf16": False}
    if p == job_pb2.PRECISION_BF16:
        if not bf16_supported():
            raise UserError("UNSUPPORTED_PRECISION", "bf16 mixed precision needs a GPU that supports bf16",
                            "hyperparameters.precision")
        return {"bf16": True, "fp16": False}
    if p == job_pb2.PRECISION_FP32:
        return {"bf16": False, "fp16": False}
    return {"bf16": bf16_supported(), "fp16": False}


@functools.cache
def checkpointing_arg() -> str:
    """transformers 5.x renamed TrainingArguments.gradient_checkpointing to activation_checkpointing; the old
    name warns on every job and goes in v6. The name the installed version has (the worker imported it)."""
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def training_kwargs(spec: job_pb2.JobSpec, job_dir: Path, has_eval: bool, *, gradient_checkpointing_default: bool,
                    lora: bool = False) -> dict:
    hp = spec.hyperparameters
    batch = hp.per_device_train_batch_size if hp.HasField("per_device_train_batch_size") else 8
    eval_strategy = EVAL.get(hp.eval_strategy, "epoch" if has_eval else "no")
    kwargs = {
        "output_dir": str(job_dir / "checkpoints"),
        "num_train_epochs": hp.num_train_epochs if hp.HasField("num_train_epochs") else 3.0,
        "max_steps": hp.max_steps if hp.HasField("max_steps") else -1,
        "learning_rate": hp.learning_rate if hp.HasField("learning_rate") else (DEFAULT_LORA_LR if lora else DEFAULT_LR),
        "per_device_train_batch_size": batch,
        "per_device_eval_batch_size": hp.per_device_eval_batch_size if hp.HasField("per_device_eval_batch_size") else batch,
        "gradient_accumulation_steps": hp.gradient_accumulation_steps if hp.HasField("gradient_accumulation_steps") else 1,
        "warmup_steps": hp.warmup_ratio if hp.HasField("warmup_ratio") else 0,
        "weight_decay": hp.weight_decay if hp.HasField("weight_decay") else 0.0,
        "lr_scheduler_type": hp.lr_scheduler_type or "linear",
        "seed": seed_of(spec),
        "eval_strategy": eval_strategy,
        "save_strategy": SAVE.get(hp.save_strategy, "epoch"),
        "save_total_limit": hp.save_total_limit if hp.HasField("save_total_limit") else 2,
        "logging_strategy": "steps",
        "logging_steps": hp.logging_steps if hp.HasField("logging_steps") else 10,
        "logging_first_step": True,
        "logging_nan_inf_filter": False,  # a NaN loss is shown as NaN, not hidden from the average
        "eval_on_start": hp.eval_on_start and has_eval,
        checkpointing_arg(): hp.gradient_checkpointing if hp.HasField("gradient_checkpointing")
        else gradient_checkpointing_default,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": device_kind() == "cuda",  # pinned host memory serves only a CUDA copy
        **precision_kwargs(spec),
    }
    if hp.HasField("eval_steps"):
        kwargs["eval_steps"] = hp.eval_steps
    if hp.HasField("save_steps"):
        kwargs["save_steps"] = hp.save_steps
    return kwargs
