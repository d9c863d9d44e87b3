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
from tunewire_server.metric_keys import per_class_keys
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
    check_best_model(spec, has_eval, settings, v)


def check_best_model(spec: job_pb2.JobSpec, has_eval: bool, settings: Settings, v: Violations) -> None:
    """Early stopping and load_best_model_at_end: eval data, an evaluation to watch, and (for the best
    checkpoint) evaluation and saving on one schedule, as transformers' TrainingArguments requires."""
    hp = spec.hyperparameters
    f = "hyperparameters."
    stopping = hp.HasField("early_stopping")
    if stopping:
        es = hp.early_stopping
        check_section(es, definition.EarlyStopping, f + "early_stopping.", settings, v)
        if es.patience == 0:
            also = " (a threshold alone does nothing)" if es.threshold else ""
            v.add(f + "early_stopping.patience", f"is required (> 0) to enable early stopping{also}")
    resolved = definition.hyperparameters(spec, has_eval)
    best = resolved.load_best_model_at_end
    if not has_eval:
        if stopping:
            v.add(f + "early_stopping", "early stopping needs an eval_dataset")
        if best and hp.HasField("load_best_model_at_end"):
            v.add(f + "load_best_model_at_end", "the best model is chosen by evaluation: it needs an eval_dataset")
        return
    why = "with early_stopping" if stopping and not hp.HasField("load_best_model_at_end") else \
        "with load_best_model_at_end"
    if (stopping or best) and resolved.eval_strategy == "no":
        v.add(f + "eval_strategy", f"must be EPOCH or STEPS {why}: nothing would be evaluated")
        return
    if not best:
        return
    if resolved.save_strategy == "no":
        v.add(f + "save_strategy", f"must be EPOCH or STEPS {why}: there would be no checkpoint to keep")
    elif resolved.save_strategy != resolved.eval_strategy:
        v.add(f + "save_strategy", f"must match eval_strategy ({resolved.eval_strategy}) {why}, got "
              f"{resolved.save_strategy}: the best model is picked among the checkpoints")
    elif (resolved.eval_strategy == "steps" and resolved.save_steps and resolved.eval_steps
          and resolved.save_steps % resolved.eval_steps):
        v.add(f + "save_steps", f"must be a multiple of eval_steps ({resolved.eval_steps}) {why}, got "
              f"{resolved.save_steps}")


# The eval metrics each task reports (names without "eval_"), for metric_for_best_model. Classification
# adds per-class metrics, named by label (metric_keys.py): the worker's compute_metrics writes them.
TASK_METRICS = {"classification": ("loss", "accuracy", "f1"), "sft": ("loss", "mean_token_accuracy", "entropy")}


def check_best_metric(spec: job_pb2.JobSpec, task: str | None, label_names: list[str] | None,
                      v: Violations) -> None:
    """metric_for_best_model is a metric the task reports. Runs after the data scan: a classifier's
    per-class metrics are named by its labels."""
    name = spec.hyperparameters.metric_for_best_model
    if not name or task not in TASK_METRICS:
        return
    name = definition.best_metric(name)
    known = set(TASK_METRICS[task])
    if task == "classification":
        if label_names is None:
            return  # the scan failed: that is the error to report
        known |= set(per_class_keys(label_names))  # labels as the worker writes them in metric keys
    if name not in known:
        listed = ", ".join(TASK_METRICS[task])
        if task == "classification":
            listed += ", precision_<label>, recall_<label>, f1_<label> (labels with characters outside " \
                      "[A-Za-z0-9_-] written with _)"
        v.add("hyperparameters.metric_for_best_model",
              f"{task} jobs report no eval metric {preview(name)}; one of {listed}")


def check_lora(spec: job_pb2.JobSpec, task: str | None, settings: Settings, v: Violations) -> None:
    if not spec.HasField("lora"):
        return
    if task == "classification":
        v.add("lora", "LoRA is supported for sft jobs only")
    check_section(spec.lora, definition.Lora, "lora.", settings, v)
    for i, name in enumerate(spec.lora.target_modules):
        if not name or not all(c.isalnum() or c in "._-" for c in name):
            v.add(f"lora.target_modules[{i}]", f"not a module name: {preview(name)}")
