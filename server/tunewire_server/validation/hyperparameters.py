"""Training hyperparameters and LoRA options: values in range, and options that fit together.

The ranges and choices come from the one definition of every hyperparameter
(tunewire_server/hyperparameters.py); what is checked here beyond them is how options fit together
(a STEPS strategy needs its steps, evaluation needs eval data, LoRA is for SFT jobs).
"""

from __future__ import annotations

import dataclasses

from tunewire.v1 import job_pb2
from tunewire_server import hyperparameters as definition
from tunewire_server.config import Settings
from tunewire_server.errors import preview
from tunewire_server.validation.common import Violations

SCHEDULERS = frozenset(definition.SCHEDULERS)


def check_section(message, section: type, prefix: str, settings: Settings, v: Violations) -> None:
    """Check the fields of `message` (a JobSpec part) that `section` defines against their bounds and
    choices: a value the spec sets, or a required one. Enum fields are limits' to check."""
    for f in dataclasses.fields(section):
        fd = message.DESCRIPTOR.fields_by_name[f.name]
        if fd.enum_type is not None or fd.is_repeated:
            continue
        set_ = message.HasField(f.name) if fd.has_presence else bool(getattr(message, f.name))
        if not (set_ or f.metadata["required"]):
            continue
        value = getattr(message, f.name)
        bounds, choices = f.metadata["bounds"], f.metadata["choices"]
        if bounds is not None and not isinstance(value, bool):
            problem = bounds.problem(value, settings)
            if problem:
                v.add(prefix + f.name, problem)
        if choices is not None and isinstance(value, str) and value not in choices:
            v.add(prefix + f.name, f"unknown value {preview(value)}; one of {', '.join(sorted(choices))}")


def check_hyperparameters(spec: job_pb2.JobSpec, settings: Settings, v: Violations) -> None:
    hp = spec.hyperparameters
    f = "hyperparameters."
    check_section(hp, definition.Hyperparameters, f, settings, v)
    if hp.eval_strategy == job_pb2.EVAL_STRATEGY_STEPS and not hp.eval_steps:
        v.add(f + "eval_steps", "is required when eval_strategy is STEPS")
    if hp.save_strategy == job_pb2.SAVE_STRATEGY_STEPS and not hp.save_steps:
        v.add(f + "save_steps", "is required when save_strategy is STEPS")
    has_eval = spec.HasField("eval_dataset")
    if hp.eval_strategy in (job_pb2.EVAL_STRATEGY_EPOCH, job_pb2.EVAL_STRATEGY_STEPS) and not has_eval:
        v.add(f + "eval_strategy", "evaluation needs an eval_dataset")
    if hp.eval_on_start and not has_eval:
        v.add(f + "eval_on_start", "evaluation needs an eval_dataset")


def check_lora(spec: job_pb2.JobSpec, task: str | None, settings: Settings, v: Violations) -> None:
    if not spec.HasField("lora"):
        return
    if task == "classification":
        v.add("lora", "LoRA is supported for sft jobs only")
    check_section(spec.lora, definition.Lora, "lora.", settings, v)
    for i, name in enumerate(spec.lora.target_modules):
        if not name or not all(c.isalnum() or c in "._-" for c in name):
            v.add(f"lora.target_modules[{i}]", f"not a module name: {preview(name)}")
