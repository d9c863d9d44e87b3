"""The one definition of the training hyperparameters (tunewire_server/hyperparameters.py): validation fills
every default into the plan and checks ranges from it, the worker's TrainingArguments come from the plan
(an old plan is completed with the same defaults), and docs/hyperparameters.md is written from it."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.validation import settings_with_data
from tunewire.spec import spec_from_dict
from tunewire_server import hyperparameters as definition
from tunewire_server.errors import InvalidSpec
from tunewire_server.validation import validate
from tunewire_server.worker.training import sft, trainer_args

ROOT = Path(__file__).resolve().parents[2]

# What the worker defaulted to before the definition existed (trainer_args.training_kwargs, sft.py,
# classification.py at the commit that introduced it), value by value.
OLD_WORKER_DEFAULTS = {
    "num_train_epochs": 3.0, "max_steps": -1, "learning_rate": 5e-5, "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8, "gradient_accumulation_steps": 1, "warmup_steps": 0, "weight_decay": 0.0,
    "lr_scheduler_type": "linear", "eval_strategy": "no", "save_strategy": "epoch",
    "save_total_limit": 2, "logging_steps": 10, "eval_on_start": False, "bf16": False, "fp16": False,
    "load_best_model_at_end": False,
}  # and "seed": 42, which is now drawn at submission (test_a_spec_without_a_seed_gets_one_drawn)


@pytest.fixture
def settings(tmp_path):
    s = settings_with_data(tmp_path / "data", [{"text": f"text {i}", "label": ["neg", "pos"][i % 2]}
                                               for i in range(10)])
    (s.dataset_root / "eval.jsonl").write_text((s.dataset_root / "train.jsonl").read_text())
    return s


def spec(task: str = "classification", **overrides):
    base = {"base_model": "tiny", task: {"text_field": "text"} if task == "sft" else {},
            "train_dataset": {"file": {"path": "train.jsonl"}}}
    return spec_from_dict({**base, **overrides})


def refused(settings, s) -> dict[str, str]:
    with pytest.raises(InvalidSpec) as info:
        validate(s, settings)
    return {v.field: v.description for v in info.value.violations}


def strip_resolved(plan: dict) -> dict:
    """A plan as an older server stored it: no resolved hyperparameters."""
    old = copy.deepcopy(plan)
    for key in ("hyperparameters", "lora", "classification"):
        old.pop(key, None)
    if "sft" in old:
        old["sft"] = {k: old["sft"][k] for k in ("mode", "max_length", "chat_template_source", "model_type",
                                                 "model_dtype", "packing_strategy")}
    return old


# --- validation fills every default once ----------------------------------------------------------


def test_every_default_is_filled_into_the_plan(settings):
    plan = validate(spec(), settings)
    seed = plan["hyperparameters"].pop("seed")
    assert isinstance(seed, int) and 0 <= seed <= definition.MAX_SEED
    assert plan["hyperparameters"] == {
        "num_train_epochs": 3.0, "max_steps": -1, "learning_rate": 5e-5, "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8, "gradient_accumulation_steps": 1, "warmup_ratio": 0.0,
        "weight_decay": 0.0, "lr_scheduler_type": "linear", "eval_strategy": "no", "eval_steps": None,
        "save_strategy": "epoch", "save_steps": None, "logging_steps": 10, "precision": "auto",
        "gradient_checkpointing": False, "eval_on_start": False, "save_total_limit": 2,
        "metric_for_best_model": None, "greater_is_better": None, "load_best_model_at_end": False,
        "early_stopping": None,
    }
    assert plan["lora"] is None
    assert plan["classification"] == {"max_length": 0, "pad_to_max_length": False}
    with_eval = validate(spec(eval_dataset={"file": {"path": "eval.jsonl"}}), settings)
    assert with_eval["hyperparameters"]["eval_strategy"] == "epoch"


def test_sft_defaults_leave_only_the_devices_choices_open(settings):
    plan = validate(spec("sft", lora={"r": 4}), settings)
    hp = plan["hyperparameters"]
    assert hp["learning_rate"] == definition.DEFAULT_LORA_LEARNING_RATE == 2e-4
    assert hp["precision"] == "auto" and hp["gradient_checkpointing"] is None  # the worker's device decides
    assert plan["lora"] == {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": [], "bias": "none"}
    assert plan["sft"]["max_length"] == 1024 and plan["sft"]["neftune_noise_alpha"] == 0.0
    assert plan["sft"]["packing"] is False and plan["sft"]["packing_strategy"] is None


def test_values_a_spec_sets_are_kept(settings):
    hp = {"num_train_epochs": 1.5, "max_steps": 7, "learning_rate": 1e-3, "per_device_train_batch_size": 3,
          "gradient_accumulation_steps": 2, "warmup_ratio": 0.1, "weight_decay": 0.01, "lr_scheduler_type": "cosine",
          "seed": 0, "eval_strategy": "steps", "eval_steps": 2, "save_strategy": "no", "logging_steps": 1,
          "precision": "fp32", "gradient_checkpointing": True, "eval_on_start": True, "save_total_limit": 1}
    plan = validate(spec("sft", hyperparameters=hp, eval_dataset={"file": {"path": "eval.jsonl"}},
                         lora={"r": 2, "alpha": 3, "dropout": 0.2, "target_modules": ["query"], "bias": "all"},
                         sft={"text_field": "text", "max_length": 64, "packing": True, "packing_strategy": "wrapped",
                              "neftune_noise_alpha": 5, "model_dtype": "bfloat16"}), settings)
    got = plan["hyperparameters"]
    assert {k: got[k] for k in hp} == hp
    assert got["per_device_eval_batch_size"] == 3  # the train batch size the spec set
    assert plan["lora"] == {"r": 2, "alpha": 3.0, "dropout": 0.2, "target_modules": ["query"], "bias": "all"}
    assert {k: plan["sft"][k] for k in ("max_length", "packing", "packing_strategy", "neftune_noise_alpha",
                                        "model_dtype")} == {"max_length": 64, "packing": True,
                                                            "packing_strategy": "wrapped", "neftune_noise_alpha": 5.0,
                                                            "model_dtype": "bfloat16"}


# --- ranges from the same definition ------------------------------------------------------------


def _out_of_range(f: dataclasses.Field, settings):
    """A value just beyond the field's upper bound."""
    bounds = f.metadata["bounds"]
    high = bounds.high_of(settings)
    if "float" in f.type:
        return float(high) if bounds.high_open else float(high) * 2 + 1
    return high if bounds.high_open else high + 1


BOUNDED = [(section, f) for section, cls in definition.SECTIONS.items() for f in dataclasses.fields(cls)
           if f.metadata["bounds"] is not None and f.metadata["bounds"].high is not None]


@pytest.mark.parametrize("section, f", BOUNDED, ids=[f"{s}.{f.name}" for s, f in BOUNDED])
def test_a_value_beyond_a_bound_is_refused_naming_its_field(settings, section, f):
    value = _out_of_range(f, settings)
    task = "classification" if section == "classification" else "sft"
    overrides = {"lora": {"r": 4, f.name: value}} if section == "lora" else {section: {f.name: value}}
    if "." in section:  # a message inside a section: hyperparameters.early_stopping
        outer, inner = section.split(".")
        overrides = {outer: {inner: {f.name: value}}}
    if section == "sft":
        overrides["sft"]["text_field"] = "text"
    problems = refused(settings, spec(task, **overrides))
    assert f"{section}.{f.name}" in problems, problems
    assert problems[f"{section}.{f.name}"].endswith(f", got {value}"), problems


@pytest.mark.parametrize("hp, field, words", [
    ({"learning_rate": 0}, "hyperparameters.learning_rate", "positive"),
    ({"learning_rate": 1}, "hyperparameters.learning_rate", "below 1"),
    ({"num_train_epochs": 101}, "hyperparameters.num_train_epochs", "at most 100 (server limit)"),
    ({"warmup_ratio": 1}, "hyperparameters.warmup_ratio", "[0, 1)"),
    ({"save_total_limit": 0}, "hyperparameters.save_total_limit", "positive"),
    ({"lr_scheduler_type": "zigzag"}, "hyperparameters.lr_scheduler_type", "cosine"),
])
def test_range_errors_say_the_bound(settings, hp, field, words):
    problems = refused(settings, spec(hyperparameters=hp))
    assert words in problems[field], problems


def test_lora_rank_is_required(settings):
    assert "between 1 and 1024" in refused(settings, spec("sft", lora={"alpha": 4}))["lora.r"]


# --- the worker reads the plan ------------------------------------------------------------------


@pytest.mark.parametrize("task, extra", [
    ("classification", {}),
    ("classification", {"eval_dataset": {"file": {"path": "eval.jsonl"}}, "hyperparameters": {"seed": 3}}),
    ("sft", {}),
    ("sft", {"lora": {"r": 4}, "sft": {"text_field": "text", "packing": True, "max_length": 32}}),
])
def test_an_old_plan_gets_the_same_defaults_in_the_worker(settings, task, extra):
    s = spec(task, **extra)
    plan = validate(s, settings)
    old = strip_resolved(plan)
    assert old != plan
    expected = copy.deepcopy(plan)
    if not s.hyperparameters.HasField("seed"):  # the seed such a job was queued with: the worker's default then
        expected["hyperparameters"]["seed"] = definition.LEGACY_SEED
    assert definition.resolve_plan(s, old) == expected
    assert definition.resolve_plan(s, plan) == plan  # a resolved plan is left as it is


def test_the_trainer_arguments_the_worker_used_to_default_to_are_unchanged(settings, tmp_path):
    plan = validate(spec(), settings)
    kwargs = trainer_args.training_kwargs(plan, tmp_path)  # on this CPU
    assert {k: kwargs[k] for k in OLD_WORKER_DEFAULTS} == OLD_WORKER_DEFAULTS
    assert kwargs["seed"] == plan["hyperparameters"]["seed"]
    assert "metric_for_best_model" not in kwargs
    assert kwargs[trainer_args.checkpointing_arg()] is False and "eval_steps" not in kwargs
    sft_kwargs = sft.sft_config_kwargs(spec("sft"), validate(spec("sft"), settings), tmp_path)
    assert {k: sft_kwargs[k] for k in OLD_WORKER_DEFAULTS} == OLD_WORKER_DEFAULTS
    assert (sft_kwargs["max_length"], sft_kwargs["packing"], sft_kwargs["packing_strategy"],
            sft_kwargs["neftune_noise_alpha"], sft_kwargs["completion_only_loss"]) == (1024, False, "bfd", None, None)


@pytest.mark.parametrize("task", ["classification", "sft"])
def test_trainer_arguments_come_from_the_plan(settings, tmp_path, task):
    s = spec(task)
    plan = validate(s, settings)
    plan["hyperparameters"].update(learning_rate=0.125, seed=9, logging_steps=3, save_strategy="no")
    kwargs = (trainer_args.training_kwargs(plan, tmp_path) if task == "classification"
              else sft.sft_config_kwargs(s, plan, tmp_path))
    assert (kwargs["learning_rate"], kwargs["seed"], kwargs["logging_steps"], kwargs["save_strategy"]) == \
        (0.125, 9, 3, "no")


# --- the docs, and the definition stays light -----------------------------------------------------


def test_the_hyperparameters_doc_is_generated_from_the_definition():
    module_spec = importlib.util.spec_from_file_location("hyperparameters_table",
                                                         ROOT / "scripts" / "hyperparameters_table.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    doc = (ROOT / "docs" / "hyperparameters.md").read_text()
    assert doc == module.document(), "docs/hyperparameters.md is stale: run scripts/hyperparameters_table.py --write"
    for section, cls in definition.SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f.metadata["help"] and f"`{section}.{f.name}`" in doc


def test_the_definition_imports_no_torch_and_no_validation():
    """The worker and validation both import it: it must stay a light leaf."""
    code = ("import sys, tunewire_server.hyperparameters; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'trl') "
            "or m.startswith('tunewire_server.validation')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
