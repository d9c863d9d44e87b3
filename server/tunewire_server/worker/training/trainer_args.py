"""TrainingArguments / SFTConfig keyword arguments from a job's resolved plan.

Every value comes from the plan's "hyperparameters" entry, where validation filled each default from the
one definition (tunewire_server/hyperparameters.py); this module holds no defaults of its own, only the
device's rules for the two values left "auto" there (precision, and gradient checkpointing for SFT).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from tunewire_server import hyperparameters as definition
from tunewire_server.worker.runtime import UserError, bf16_supported, device_kind

DEFAULT_LORA_LR = definition.DEFAULT_LORA_LEARNING_RATE  # the worker's tests name it


def precision_kwargs(precision: str) -> dict:
    """bf16 where the device supports it for "auto" (a CPU never gets it); fp16/bf16 only where they run."""
    if precision == "fp16":
        if device_kind() != "cuda":
            raise UserError("UNSUPPORTED_PRECISION", "fp16 mixed precision needs a GPU", "hyperparameters.precision")
        return {"fp16": True, "bf16": False}
    if precision == "bf16":
        if not bf16_supported():
            raise UserError("UNSUPPORTED_PRECISION", "bf16 mixed precision needs a GPU that supports bf16",
                            "hyperparameters.precision")
        return {"bf16": True, "fp16": False}
    if precision == "fp32":
        return {"bf16": False, "fp16": False}
    return {"bf16": bf16_supported(), "fp16": False}


@functools.cache
def checkpointing_arg() -> str:
    """transformers 5.x renamed TrainingArguments.gradient_checkpointing to activation_checkpointing; the old
    name warns on every job and goes in v6. The name the installed version has (the worker imported it)."""
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def training_kwargs(plan: dict, job_dir: Path) -> dict:
    """TrainingArguments' keyword arguments for a resolved plan (hyperparameters.resolve_plan)."""
    hp = plan["hyperparameters"]
    checkpointing = hp["gradient_checkpointing"]
    if checkpointing is None:  # "auto", left for SFT jobs: on where there is a GPU to save memory on
        checkpointing = device_kind() == "cuda"
    kwargs = {
        "output_dir": str(job_dir / "checkpoints"),
        "num_train_epochs": hp["num_train_epochs"],
        "max_steps": hp["max_steps"],
        "learning_rate": hp["learning_rate"],
        "per_device_train_batch_size": hp["per_device_train_batch_size"],
        "per_device_eval_batch_size": hp["per_device_eval_batch_size"],
        "gradient_accumulation_steps": hp["gradient_accumulation_steps"],
        "warmup_steps": hp["warmup_ratio"],  # transformers 5: a value below 1 is a fraction of the steps
        "weight_decay": hp["weight_decay"],
        "lr_scheduler_type": hp["lr_scheduler_type"],
        "seed": hp["seed"],
        "eval_strategy": hp["eval_strategy"],
        "save_strategy": hp["save_strategy"],
        "save_total_limit": hp["save_total_limit"],
        "logging_strategy": "steps",
        "logging_steps": hp["logging_steps"],
        "logging_first_step": True,
        "logging_nan_inf_filter": False,  # a NaN loss is shown as NaN, not hidden from the average
        "eval_on_start": hp["eval_on_start"],
        checkpointing_arg(): checkpointing,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": device_kind() == "cuda",  # pinned host memory serves only a CUDA copy
        **precision_kwargs(hp["precision"]),
    }
    # The best checkpoint (load_best_model_at_end) and what early stopping watches; a plan stored before
    # these existed has none of them.
    if hp.get("metric_for_best_model"):
        kwargs["metric_for_best_model"] = hp["metric_for_best_model"]
        kwargs["greater_is_better"] = hp["greater_is_better"]
    kwargs["load_best_model_at_end"] = bool(hp.get("load_best_model_at_end"))
    if hp["eval_steps"] is not None:
        kwargs["eval_steps"] = hp["eval_steps"]
    if hp["save_steps"] is not None:
        kwargs["save_steps"] = hp["save_steps"]
    return kwargs
