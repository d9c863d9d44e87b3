"""Validation of reproducibility and best-model settings: a seed drawn for a spec without one, early stopping
and load_best_model_at_end (eval data, schedules that match, a metric the task reports), each refused with
INVALID_ARGUMENT naming the field before anything runs, and what the plan then holds."""

from __future__ import annotations

import pytest

from tests.support.validation import settings_with_data
from tunewire.spec import spec_from_dict
from tunewire_server import hyperparameters as definition
from tunewire_server.errors import InvalidSpec
from tunewire_server.validation import validate
from tunewire_server.worker.training import trainer_args

EVAL = {"file": {"path": "eval.jsonl"}}


@pytest.fixture
def settings(tmp_path):
    s = settings_with_data(tmp_path / "data", [{"text": f"text {i}", "label": ["neg", "pos"][i % 2]}
                                               for i in range(10)])
    (s.dataset_root / "eval.jsonl").write_text((s.dataset_root / "train.jsonl").read_text())
    return s


def spec(task: str = "classification", hp: dict | None = None, evals: bool = True, **overrides):
    base = {"base_model": "tiny", task: {"text_field": "text"} if task == "sft" else {},
            "train_dataset": {"file": {"path": "train.jsonl"}}, "hyperparameters": hp or {}}
    if evals:
        base["eval_dataset"] = EVAL
    return spec_from_dict({**base, **overrides})


def refused(settings, s) -> dict[str, str]:
    with pytest.raises(InvalidSpec) as info:
        validate(s, settings)
    return {v.field: v.description for v in info.value.violations}


# --- the seed ---------------------------------------------------------------------------------------


def test_a_spec_without_a_seed_gets_one_drawn_and_kept_in_the_plan(settings):
    seeds = {validate(spec(), settings)["hyperparameters"]["seed"] for _ in range(4)}
    assert len(seeds) > 1  # drawn, not a constant (four equal draws of 2**32: never in practice)
    assert all(0 <= seed <= definition.MAX_SEED for seed in seeds)


def test_a_seed_the_spec_sets_is_kept(settings):
    assert validate(spec(hp={"seed": 0}), settings)["hyperparameters"]["seed"] == 0
    assert validate(spec(hp={"seed": 7}), settings)["hyperparameters"]["seed"] == 7


# --- defaults ---------------------------------------------------------------------------------------


def test_early_stopping_turns_on_the_best_model_by_eval_loss(settings, tmp_path):
    plan = validate(spec(hp={"early_stopping": {"patience": 2}}), settings)
    hp = plan["hyperparameters"]
    assert hp["early_stopping"] == {"patience": 2, "threshold": 0.0}
    assert (hp["load_best_model_at_end"], hp["metric_for_best_model"], hp["greater_is_better"]) == (True, "loss", False)
    assert (hp["eval_strategy"], hp["save_strategy"]) == ("epoch", "epoch")
    kwargs = trainer_args.training_kwargs(plan, tmp_path)
    assert (kwargs["load_best_model_at_end"], kwargs["metric_for_best_model"], kwargs["greater_is_better"]) == \
        (True, "loss", False)


@pytest.mark.parametrize("metric, greater", [("f1", True), ("accuracy", True), ("eval_loss", False),
                                             ("f1_pos", True)])
def test_greater_is_better_follows_the_metric_name(settings, metric, greater):
    hp = validate(spec(hp={"metric_for_best_model": metric, "load_best_model_at_end": True}),
                  settings)["hyperparameters"]
    assert hp["metric_for_best_model"] == metric.removeprefix("eval_")
    assert hp["greater_is_better"] is greater


def test_greater_is_better_the_spec_sets_is_kept(settings):
    hp = validate(spec(hp={"early_stopping": {"patience": 1}, "greater_is_better": True}), settings)["hyperparameters"]
    assert hp["greater_is_better"] is True


def test_load_best_can_be_turned_off_with_early_stopping(settings):
    hp = validate(spec(hp={"early_stopping": {"patience": 1}, "load_best_model_at_end": False,
                           "save_strategy": "no"}), settings)["hyperparameters"]
    assert hp["load_best_model_at_end"] is False and hp["early_stopping"]["patience"] == 1


@pytest.mark.parametrize("given, schedule", [
    ({"eval_strategy": "steps", "eval_steps": 5}, ("steps", 5, "steps", 5)),
    ({"save_strategy": "steps", "save_steps": 4}, ("steps", 4, "steps", 4)),
    ({"eval_strategy": "steps", "eval_steps": 2, "save_strategy": "steps", "save_steps": 6}, ("steps", 2, "steps", 6)),
    ({}, ("epoch", None, "epoch", None)),
])
def test_an_unset_strategy_follows_the_other_with_the_best_model(settings, given, schedule):
    hp = validate(spec(hp={"early_stopping": {"patience": 1}, **given}), settings)["hyperparameters"]
    assert (hp["eval_strategy"], hp["eval_steps"], hp["save_strategy"], hp["save_steps"]) == schedule


def test_without_best_model_settings_the_schedules_are_as_before(settings):
    hp = validate(spec(hp={"eval_strategy": "steps", "eval_steps": 5}), settings)["hyperparameters"]
    assert (hp["save_strategy"], hp["save_steps"], hp["load_best_model_at_end"]) == ("epoch", None, False)


# --- refused ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("hp, evals, field, words", [
    ({"early_stopping": {"patience": 2}}, False, "hyperparameters.early_stopping", "needs an eval_dataset"),
    ({"load_best_model_at_end": True}, False, "hyperparameters.load_best_model_at_end", "needs an eval_dataset"),
    ({"early_stopping": {"threshold": 0.1}}, True, "hyperparameters.early_stopping.patience",
     "a threshold alone does nothing"),
    ({"early_stopping": {}}, True, "hyperparameters.early_stopping.patience", "is required (> 0)"),
    ({"early_stopping": {"patience": 2, "threshold": -0.5}}, True, "hyperparameters.early_stopping.threshold",
     "got -0.5"),
    ({"early_stopping": {"patience": 1}, "eval_strategy": "no"}, True, "hyperparameters.eval_strategy",
     "nothing would be evaluated"),
    ({"early_stopping": {"patience": 1}, "save_strategy": "no"}, True, "hyperparameters.save_strategy",
     "no checkpoint to keep"),
    ({"load_best_model_at_end": True, "eval_strategy": "epoch", "save_strategy": "steps", "save_steps": 3}, True,
     "hyperparameters.save_strategy", "must match eval_strategy (epoch)"),
    ({"early_stopping": {"patience": 1}, "eval_strategy": "steps", "eval_steps": 4, "save_strategy": "steps",
      "save_steps": 6}, True, "hyperparameters.save_steps", "multiple of eval_steps (4)"),
    ({"early_stopping": {"patience": 1}, "metric_for_best_model": "bleu"}, True,
     "hyperparameters.metric_for_best_model", "report no eval metric 'bleu'"),
    ({"metric_for_best_model": "f1_maybe", "load_best_model_at_end": True}, True,
     "hyperparameters.metric_for_best_model", "precision_<label>"),
])
def test_bad_best_model_settings_are_refused_naming_the_field(settings, hp, evals, field, words):
    problems = refused(settings, spec(hp=hp, evals=evals))
    assert field in problems, problems
    assert words in problems[field], problems


def test_sft_metrics_are_its_own(settings):
    hp = validate(spec("sft", hp={"early_stopping": {"patience": 1}, "metric_for_best_model": "mean_token_accuracy"}),
                  settings)["hyperparameters"]
    assert (hp["metric_for_best_model"], hp["greater_is_better"]) == ("mean_token_accuracy", True)
    problems = refused(settings, spec("sft", hp={"early_stopping": {"patience": 1}, "metric_for_best_model": "f1"}))
    assert "mean_token_accuracy" in problems["hyperparameters.metric_for_best_model"]


def test_an_old_plan_has_no_best_model_and_runs_as_before(settings, tmp_path):
    s = spec()
    plan = validate(s, settings)
    for key in ("metric_for_best_model", "greater_is_better", "load_best_model_at_end", "early_stopping"):
        plan["hyperparameters"].pop(key)
    resolved = definition.resolve_plan(s, plan)["hyperparameters"]
    assert resolved["early_stopping"] is None and resolved["load_best_model_at_end"] is False
    assert trainer_args.training_kwargs(plan, tmp_path)["load_best_model_at_end"] is False


def test_a_per_class_metric_is_named_as_the_worker_reports_it(tmp_path):
    """A label outside [A-Za-z0-9_-] appears in metric keys with `_` (metric_keys.metric_names): that key is
    accepted, the raw label is not (the Trainer would find no such metric after the first evaluation)."""
    s = settings_with_data(tmp_path / "data", [{"text": f"text {i}", "label": ["very bad", "good"][i % 2]}
                                               for i in range(10)])
    (s.dataset_root / "eval.jsonl").write_text((s.dataset_root / "train.jsonl").read_text())
    hp = validate(spec(hp={"metric_for_best_model": "recall_very_bad", "load_best_model_at_end": True}),
                  s)["hyperparameters"]
    assert hp["metric_for_best_model"] == "recall_very_bad"
    problems = refused(s, spec(hp={"metric_for_best_model": "recall_very bad", "load_best_model_at_end": True}))
    assert "written with _" in problems["hyperparameters.metric_for_best_model"]
