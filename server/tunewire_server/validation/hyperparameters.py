"""Training hyperparameters and LoRA options: values in range, and options that fit together."""

from __future__ import annotations

import math

from tunewire.v1 import job_pb2
from tunewire_server.config import Settings
from tunewire_server.errors import preview
from tunewire_server.validation.common import Violations

SCHEDULERS = frozenset({
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay",
})


def check_hyperparameters(spec: job_pb2.JobSpec, settings: Settings, v: Violations) -> None:
    hp = spec.hyperparameters
    f = "hyperparameters."

    def positive(name: str, value: float) -> None:
        if not (math.isfinite(value) and value > 0):
            v.add(f + name, f"must be a positive number, got {value}")

    if hp.HasField("num_train_epochs"):
        positive("num_train_epochs", hp.num_train_epochs)
        if math.isfinite(hp.num_train_epochs) and hp.num_train_epochs > settings.max_epochs:
            v.add(f + "num_train_epochs", f"must be at most {settings.max_epochs:g} (server limit)")
    if hp.HasField("max_steps"):
        positive("max_steps", hp.max_steps)
        if hp.max_steps > settings.max_steps:
            v.add(f + "max_steps", f"must be at most {settings.max_steps} (server limit)")
    if hp.HasField("learning_rate"):
        positive("learning_rate", hp.learning_rate)
        if math.isfinite(hp.learning_rate) and hp.learning_rate >= 1:
            v.add(f + "learning_rate", f"must be below 1, got {hp.learning_rate}")
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                 "logging_steps", "save_total_limit"):
        if hp.HasField(name):
            positive(name, getattr(hp, name))
    for name, limit in (("per_device_train_batch_size", settings.max_batch_size),
                        ("per_device_eval_batch_size", settings.max_batch_size), ("gradient_accumulation_steps", 1024)):
        if getattr(hp, name) > limit:
            v.add(f + name, f"must be at most {limit} (server limit)")
    if hp.HasField("warmup_ratio") and not (0 <= hp.warmup_ratio < 1):
        v.add(f + "warmup_ratio", f"must be in [0, 1), got {hp.warmup_ratio}")
    if hp.HasField("weight_decay") and not (math.isfinite(hp.weight_decay) and 0 <= hp.weight_decay < 1):
        v.add(f + "weight_decay", f"must be in [0, 1), got {hp.weight_decay}")
    if hp.lr_scheduler_type and hp.lr_scheduler_type not in SCHEDULERS:
        v.add(f + "lr_scheduler_type",
              f"unknown scheduler {preview(hp.lr_scheduler_type)}; one of {', '.join(sorted(SCHEDULERS))}")
    if hp.eval_strategy == job_pb2.EVAL_STRATEGY_STEPS and not hp.eval_steps:
        v.add(f + "eval_steps", "is required when eval_strategy is STEPS")
    if hp.save_strategy == job_pb2.SAVE_STRATEGY_STEPS and not hp.save_steps:
        v.add(f + "save_steps", "is required when save_strategy is STEPS")
    has_eval = spec.HasField("eval_dataset")
    if hp.eval_strategy in (job_pb2.EVAL_STRATEGY_EPOCH, job_pb2.EVAL_STRATEGY_STEPS) and not has_eval:
        v.add(f + "eval_strategy", "evaluation needs an eval_dataset")
    if hp.eval_on_start and not has_eval:
        v.add(f + "eval_on_start", "evaluation needs an eval_dataset")
    for name in hp.DESCRIPTOR.fields_by_name:
        value = getattr(hp, name)
        if isinstance(value, float) and not math.isfinite(value):
            v.add(f + name, "must be a finite number")


def check_lora(spec: job_pb2.JobSpec, task: str | None, v: Violations) -> None:
    if not spec.HasField("lora"):
        return
    lora = spec.lora
    if task == "classification":
        v.add("lora", "LoRA is supported for sft jobs only")
    if lora.r == 0 or lora.r > 1024:
        v.add("lora.r", "must be between 1 and 1024")
    if lora.HasField("alpha") and not (math.isfinite(lora.alpha) and lora.alpha > 0):
        v.add("lora.alpha", "must be a positive number")
    if lora.HasField("dropout") and not (0 <= lora.dropout < 1):
        v.add("lora.dropout", "must be in [0, 1)")
    for i, name in enumerate(lora.target_modules):
        if not name or not all(c.isalnum() or c in "._-" for c in name):
            v.add(f"lora.target_modules[{i}]", f"not a module name: {preview(name)}")
