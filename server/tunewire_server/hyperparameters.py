"""Every training hyperparameter a job may set, in one place: its default, its allowed range and its help.

In the style of TRL's config dataclasses: one frozen dataclass per JobSpec message (`Hyperparameters`,
`LoraConfig`, the task options), whose fields carry the JobSpec field names, their defaults, and in
`field(metadata=...)` their help text and allowed values. Three readers, one definition:

- validation checks a spec's values against `bounds`/`choices` (validation/hyperparameters.py) and writes
  the resolved values, every default filled, into the plan the worker runs (`resolve_plan`);
- the worker reads them from the plan (worker/training/trainer_args.py); a plan stored before plans
  carried them is completed from the spec by the same `resolve_plan`;
- docs/hyperparameters.md is generated from it (scripts/hyperparameters_table.py).

A few defaults depend on the device, which only the worker knows: precision "auto" (bf16 where the GPU
supports it) and gradient_checkpointing None (on for SFT on a GPU). They stay "auto" in the plan and
the worker applies the rule. Torch-free and light: it imports only the generated protobuf module.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from dataclasses import dataclass, field

from tunewire.v1 import job_pb2


@dataclass(frozen=True)
class Bounds:
    """The values a number may take. `high` is a number or the name of a Settings attribute (the
    server's limit); `why` says where a bound comes from, in messages and the docs."""

    low: float | None = None
    low_open: bool = False  # low itself is refused
    high: float | str | None = None
    high_open: bool = False  # high itself is refused
    why: str = ""

    def high_of(self, settings) -> float | None:
        return getattr(settings, self.high) if isinstance(self.high, str) else self.high

    def problem(self, value: float, settings=None) -> str | None:
        """Why `value` is out of bounds (a message naming the bounds and the value), or None."""
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        high = self.high_of(settings)
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = high is not None and (value >= high if self.high_open else value > high)
        if not (too_low or too_high):
            return None
        why = f" ({self.why})" if self.why else ""
        if self.low_open and self.low == 0:  # "positive", with or without a ceiling
            if too_low:
                return f"must be a positive number, got {value}"
            return f"must be {'below' if self.high_open else 'at most'} {_num(high)}{why}, got {value}"
        if self.high_open:
            return f"must be in [{_num(self.low)}, {_num(high)}){why}, got {value}"
        return f"must be between {_num(self.low)} and {_num(high)}{why}, got {value}"

    def text(self) -> str:
        """The bounds for the docs: `(0, 1)`, `[1, 1024]`, `(0, setting `max_epochs`]`."""
        high = f"setting `{self.high}`" if isinstance(self.high, str) else _num(self.high)
        if self.low is not None and self.high is not None:
            text = f"{'(' if self.low_open else '['}{_num(self.low)}, {high}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '≥'} {_num(self.low)}"
        else:
            text = f"{'<' if self.high_open else '≤'} {high}"
        return text


def _num(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _field(default, help: str, *, bounds: Bounds | None = None, choices: tuple[str, ...] | None = None,
           default_text: str | None = None, required: bool = False):
    """A field with its default and metadata: help, bounds or choices, and default_text where the default
    is derived from other values (shown in the docs instead of the placeholder default)."""
    metadata = {"help": help, "bounds": bounds, "choices": choices, "default_text": default_text,
                "required": required}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=metadata)
    return field(default=default, metadata=metadata)


POSITIVE = Bounds(0, low_open=True)
FRACTION = Bounds(0, high=1, high_open=True)
SERVER_LIMIT = "server limit"
MAX_SEED = 2**32 - 1  # transformers.set_seed calls np.random.seed, which takes 0..2**32-1 only
LEGACY_SEED = 42  # the seed of a job whose plan was stored before seeds were drawn (and recorded)
MAX_PATIENCE = 1000
MAX_SAVE_TOTAL_LIMIT = 1000
MAX_GRADIENT_ACCUMULATION = 1024
MAX_LORA_RANK = 1024
MAX_LORA_ALPHA = 65_536.0  # alpha/r scales the adapter's output; beyond this training only diverges
MAX_NEFTUNE_ALPHA = 1000.0
CLASSIFICATION_MAX_LENGTH_CAP = 512  # classification.max_length 0: the tokenizer's maximum, at most this

SCHEDULERS = (  # transformers' SchedulerType names a job may ask for
    "constant", "constant_with_warmup", "cosine", "cosine_with_min_lr", "cosine_with_restarts", "inverse_sqrt",
    "linear", "polynomial", "warmup_stable_decay",
)
EVAL = {job_pb2.EVAL_STRATEGY_NO: "no", job_pb2.EVAL_STRATEGY_EPOCH: "epoch", job_pb2.EVAL_STRATEGY_STEPS: "steps"}
SAVE = {job_pb2.SAVE_STRATEGY_NO: "no", job_pb2.SAVE_STRATEGY_EPOCH: "epoch", job_pb2.SAVE_STRATEGY_STEPS: "steps"}
PRECISION = {
    job_pb2.PRECISION_UNSPECIFIED: "auto",
    job_pb2.PRECISION_FP32: "fp32",
    job_pb2.PRECISION_BF16: "bf16",
    job_pb2.PRECISION_FP16: "fp16",
}
DTYPES = {
    job_pb2.MODEL_DTYPE_UNSPECIFIED: "float32",
    job_pb2.MODEL_DTYPE_FLOAT32: "float32",
    job_pb2.MODEL_DTYPE_BFLOAT16: "bfloat16",
    job_pb2.MODEL_DTYPE_FLOAT16: "float16",
}
PACKING = {
    job_pb2.PACKING_STRATEGY_UNSPECIFIED: "bfd",
    job_pb2.PACKING_STRATEGY_BFD: "bfd",
    job_pb2.PACKING_STRATEGY_WRAPPED: "wrapped",
}
LORA_BIAS = {
    job_pb2.LORA_BIAS_UNSPECIFIED: "none",
    job_pb2.LORA_BIAS_NONE: "none",
    job_pb2.LORA_BIAS_ALL: "all",
    job_pb2.LORA_BIAS_LORA_ONLY: "lora_only",
}
DEFAULT_LORA_LEARNING_RATE = 2e-4


@dataclass(frozen=True)
class Hyperparameters:
    """JobSpec.hyperparameters: what transformers' TrainingArguments (TRL's SFTConfig) gets."""

    num_train_epochs: float = _field(3.0, "Epochs to train. Ignored when max_steps is set.",
                                     bounds=Bounds(0, low_open=True, high="max_epochs", why=SERVER_LIMIT))
    max_steps: int = _field(-1, "Stop after this many optimizer steps (-1 in the plan: unset).",
                            bounds=Bounds(0, low_open=True, high="max_steps", why=SERVER_LIMIT),
                            default_text="unset: train num_train_epochs")
    learning_rate: float = _field(5e-5, "Peak learning rate of the AdamW optimizer.",
                                  bounds=Bounds(0, low_open=True, high=1, high_open=True),
                                  default_text=f"`5e-05` (`{DEFAULT_LORA_LEARNING_RATE:g}` with LoRA)")
    per_device_train_batch_size: int = _field(
        8, "Training examples per device and step.",
        bounds=Bounds(0, low_open=True, high="max_batch_size", why=SERVER_LIMIT))
    per_device_eval_batch_size: int | None = _field(
        None, "Evaluation examples per device and step.",
        bounds=Bounds(0, low_open=True, high="max_batch_size", why=SERVER_LIMIT),
        default_text="per_device_train_batch_size")
    gradient_accumulation_steps: int = _field(
        1, "Batches whose gradients add up to one optimizer step.",
        bounds=Bounds(0, low_open=True, high=MAX_GRADIENT_ACCUMULATION, why=SERVER_LIMIT))
    warmup_ratio: float = _field(0.0, "Fraction of the training steps spent warming the learning rate up.",
                                 bounds=FRACTION)
    weight_decay: float = _field(0.0, "AdamW weight decay.", bounds=FRACTION)
    lr_scheduler_type: str = _field("linear", "How the learning rate changes over training (a transformers "
                                    "scheduler name).", choices=SCHEDULERS)
    seed: int = _field(LEGACY_SEED, "Seed of the shuffles (max_samples too), the head's initialisation and "
                       "dropout. Set before anything random happens: the same spec and seed give the same model.",
                       bounds=Bounds(0, high=MAX_SEED, why="the seeds numpy's random generator accepts"),
                       default_text="drawn at submission and recorded on the job (`Job.seed`)")
    eval_strategy: str | None = _field(None, "When to evaluate: no, each epoch or every eval_steps steps.",
                                       choices=tuple(EVAL.values()),
                                       default_text="`epoch` with an eval_dataset, else `no`")
    eval_steps: int | None = _field(None, "Steps between evaluations; required when eval_strategy is steps.",
                                    bounds=Bounds(0, high="max_steps", why="the server's max_steps"))
    save_strategy: str = _field("epoch", "When to save a checkpoint: no, each epoch or every save_steps steps.",
                                choices=tuple(SAVE.values()))
    save_steps: int | None = _field(None, "Steps between checkpoints; required when save_strategy is steps.",
                                    bounds=Bounds(0, high="max_steps", why="the server's max_steps"))
    logging_steps: int = _field(10, "Steps between training-log events (the first step is logged too).",
                                bounds=Bounds(0, low_open=True, high="max_steps", why="the server's max_steps"))
    precision: str = _field("auto", "Mixed precision; auto (unset): bf16 where the GPU supports it, else fp32 (a CPU "
                            "always gets fp32). fp16 needs a GPU.", choices=tuple(PRECISION.values()))
    gradient_checkpointing: bool | None = _field(
        None, "Recompute activations in the backward pass to save memory.",
        default_text="on for SFT on a GPU, off otherwise")
    eval_on_start: bool = _field(False, "Evaluate once before training starts (the baseline); needs an "
                                 "eval_dataset.")
    save_total_limit: int = _field(2, "Keep at most this many checkpoints (the best one is always kept too "
                                   "with load_best_model_at_end).",
                                   bounds=Bounds(0, low_open=True, high=MAX_SAVE_TOTAL_LIMIT, why=SERVER_LIMIT))
    metric_for_best_model: str | None = _field(
        None, "The eval metric that picks the best checkpoint and that early stopping watches, without "
        "\"eval_\": loss, or one the task reports (classification: accuracy, f1, precision_<label>, "
        "recall_<label>, f1_<label>; SFT: mean_token_accuracy, entropy).",
        default_text="`loss` with early_stopping or load_best_model_at_end, else unset")
    greater_is_better: bool | None = _field(
        None, "Whether a higher metric_for_best_model is better.",
        default_text="`false` for a loss (`loss`, `*_loss`), `true` otherwise")
    load_best_model_at_end: bool | None = _field(
        None, "The final model is the best checkpoint by metric_for_best_model instead of the last step; needs "
        "an eval_dataset and evaluation and saving on the same schedule.",
        default_text="`true` with early_stopping, else `false`")


@dataclass(frozen=True)
class EarlyStopping:
    """JobSpec.hyperparameters.early_stopping (transformers' EarlyStoppingCallback): setting it turns it on."""

    patience: int | None = _field(None, "Evaluations in a row without improvement of metric_for_best_model "
                                  "before training stops.", bounds=Bounds(1, high=MAX_PATIENCE, why=SERVER_LIMIT),
                                  default_text="required (> 0)")
    threshold: float = _field(0.0, "The least change of metric_for_best_model that counts as an improvement.",
                              bounds=Bounds(0))


@dataclass(frozen=True)
class Lora:
    """JobSpec.lora: a LoRA adapter (PEFT) instead of the full model; SFT jobs only."""

    r: int | None = _field(None, "Rank of the adapter; setting it enables LoRA.",
                           bounds=Bounds(1, high=MAX_LORA_RANK), required=True, default_text="required")
    alpha: float | None = _field(None, "Scale of the adapter's output (alpha / r).",
                                 bounds=Bounds(0, low_open=True, high=MAX_LORA_ALPHA), default_text="2 × r")
    dropout: float = _field(0.0, "Dropout on the adapter's input.", bounds=FRACTION)
    target_modules: tuple[str, ...] = _field(
        (), "Module names to adapt; empty: PEFT's default for the architecture (all-linear for an unknown one).")
    bias: str = _field("none", "Which biases train: none, all, or those of the adapted modules (lora_only).",
                       choices=("none", "all", "lora_only"))


@dataclass(frozen=True)
class SftOptions:
    """The training options of JobSpec.sft (its data-shape options, columns and templates, are not here)."""

    max_length: int = _field(1024, "Truncate (or pack) sequences to this many tokens.",
                             bounds=Bounds(0, low_open=True, high="max_seq_length", why=SERVER_LIMIT),
                             default_text="`1024`, at most the model's positions")
    model_dtype: str = _field("float32", "The dtype the model's weights are loaded in; float16 only with LoRA.",
                              choices=("float32", "bfloat16", "float16"))
    packing: bool = _field(False, "Pack several examples into each row.")
    packing_strategy: str | None = _field(
        None, "bfd: best-fit decreasing, padding-free (TRL's default); wrapped: concatenate and cut.",
        choices=("bfd", "wrapped"), default_text="`bfd` with packing, else unset")
    neftune_noise_alpha: float = _field(0.0, "NEFTune noise on the embeddings while training; 0: off.",
                                        bounds=Bounds(0, high=MAX_NEFTUNE_ALPHA))
    completion_only_loss: bool | None = _field(
        None, "The loss covers the completion only (prompt/completion data).",
        default_text="TRL's: on for prompt/completion data")
    assistant_only_loss: bool = _field(False, "The loss covers assistant turns only (conversational data).")


@dataclass(frozen=True)
class ClassificationOptions:
    """The training options of JobSpec.classification (its columns and label names are not here)."""

    max_length: int = _field(0, "Tokenizer truncation length; 0 (unset): the tokenizer's model maximum, at most "
                             f"{CLASSIFICATION_MAX_LENGTH_CAP}.",
                             bounds=Bounds(0, low_open=True, high="max_seq_length", why=SERVER_LIMIT),
                             default_text=f"the tokenizer's maximum, at most {CLASSIFICATION_MAX_LENGTH_CAP}")
    pad_to_max_length: bool = _field(False, "Pad every example to max_length instead of each batch to its "
                                     "longest example; needs a max_length.")


SECTIONS = {  # JobSpec field -> its definition
    "hyperparameters": Hyperparameters,
    "hyperparameters.early_stopping": EarlyStopping,
    "lora": Lora,
    "sft": SftOptions,
    "classification": ClassificationOptions,
}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def as_dict(values) -> dict:
    """A resolved section as the plan holds it (JSON: lists, not tuples)."""
    return {f.name: _plain(getattr(values, f.name)) for f in dataclasses.fields(values)}


def _set(message, name: str):
    """A field's value when the spec sets it, else None (an optional field unset, a plain one zero/empty)."""
    fd = message.DESCRIPTOR.fields_by_name[name]
    if fd.has_presence:
        return getattr(message, name) if message.HasField(name) else None
    value = getattr(message, name)
    return value or None


# --- resolving a spec: every default filled ------------------------------------------------------


def draw_seed() -> int:
    """A fresh seed for a job whose spec sets none (recorded in its plan, so the run can be repeated)."""
    return secrets.randbelow(MAX_SEED + 1)


def is_loss(metric: str) -> bool:
    """Whether a metric is a loss (lower is better), by its name as transformers decides it."""
    return metric.endswith("loss")


def best_metric(name: str) -> str:
    """metric_for_best_model as the plan holds it: without the "eval_" prefix the Trainer adds."""
    return name.removeprefix("eval_")


def hyperparameters(spec: job_pb2.JobSpec, has_eval: bool, seed: int | None = None) -> Hyperparameters:
    """spec.hyperparameters with every default filled (but the device's: precision, checkpointing for SFT).
    `seed` is the one used when the spec sets none (validation draws it; an old plan gets LEGACY_SEED)."""
    hp = spec.hyperparameters
    given = {f.name: _set(hp, f.name) for f in dataclasses.fields(Hyperparameters)}
    given["eval_strategy"] = EVAL.get(hp.eval_strategy)
    given["save_strategy"] = SAVE.get(hp.save_strategy)
    given["precision"] = PRECISION.get(hp.precision)
    values = {k: v for k, v in given.items() if v is not None}
    if spec.WhichOneof("task") != "sft":  # on by default for SFT on a GPU only, which the worker knows
        values.setdefault("gradient_checkpointing", False)
    if "learning_rate" not in values and spec.HasField("lora"):
        values["learning_rate"] = DEFAULT_LORA_LEARNING_RATE
    values.setdefault("per_device_eval_batch_size",
                      values.get("per_device_train_batch_size", Hyperparameters.per_device_train_batch_size))
    if seed is not None:
        values.setdefault("seed", seed)
    stopping = hp.HasField("early_stopping")
    values.setdefault("load_best_model_at_end", stopping)
    if "metric_for_best_model" in values:
        values["metric_for_best_model"] = best_metric(values["metric_for_best_model"])
    elif stopping or values["load_best_model_at_end"]:
        values["metric_for_best_model"] = "loss"
    if values.get("metric_for_best_model") is not None:
        values.setdefault("greater_is_better", not is_loss(values["metric_for_best_model"]))
    _matching_strategies(values, hp)
    values.setdefault("eval_strategy", "epoch" if has_eval else "no")
    values["eval_on_start"] = hp.eval_on_start and has_eval
    return Hyperparameters(**values)


def _matching_strategies(values: dict, hp: job_pb2.Hyperparameters) -> None:
    """With load_best_model_at_end, evaluation and saving run on one schedule (transformers requires it): the
    one the spec set for either, when it set only one (validation refuses two that differ)."""
    if not values["load_best_model_at_end"]:
        return
    eval_set = hp.eval_strategy != job_pb2.EVAL_STRATEGY_UNSPECIFIED
    save_set = hp.save_strategy != job_pb2.SAVE_STRATEGY_UNSPECIFIED
    if eval_set and not save_set and values["eval_strategy"] in ("epoch", "steps"):
        values["save_strategy"] = values["eval_strategy"]
        if values["eval_strategy"] == "steps":
            values.setdefault("save_steps", values.get("eval_steps"))
    elif save_set and not eval_set and values["save_strategy"] in ("epoch", "steps"):
        values["eval_strategy"] = values["save_strategy"]
        if values["save_strategy"] == "steps":
            values.setdefault("eval_steps", values.get("save_steps"))


def early_stopping(spec: job_pb2.JobSpec) -> EarlyStopping | None:
    """spec.hyperparameters.early_stopping with every default filled, or None without early stopping."""
    if not spec.hyperparameters.HasField("early_stopping"):
        return None
    es = spec.hyperparameters.early_stopping
    return EarlyStopping(patience=es.patience, threshold=es.threshold)


def hyperparameters_entry(spec: job_pb2.JobSpec, has_eval: bool, seed: int | None = None) -> dict:
    """The plan's "hyperparameters" entry: Hyperparameters' fields and "early_stopping" (a dict or None)."""
    stopping = early_stopping(spec)
    return {**as_dict(hyperparameters(spec, has_eval, seed)),
            "early_stopping": as_dict(stopping) if stopping is not None else None}


def lora(spec: job_pb2.JobSpec) -> Lora | None:
    """spec.lora with every default filled, or None without LoRA."""
    if not spec.HasField("lora"):
        return None
    lo = spec.lora
    return Lora(r=lo.r, alpha=lo.alpha if lo.HasField("alpha") else 2 * lo.r,
                dropout=lo.dropout if lo.HasField("dropout") else Lora.dropout,
                target_modules=tuple(lo.target_modules), bias=LORA_BIAS.get(lo.bias, Lora.bias))


def sft_options(spec: job_pb2.JobSpec, model_positions: int | None = None) -> SftOptions:
    """spec.sft's training options with every default filled; max_length at most `model_positions`."""
    task = spec.sft
    default_length = SftOptions.max_length if model_positions is None else min(SftOptions.max_length,
                                                                               model_positions)
    return SftOptions(
        max_length=task.max_length or default_length,
        model_dtype=DTYPES.get(task.model_dtype, SftOptions.model_dtype),
        packing=task.packing,
        packing_strategy=PACKING.get(task.packing_strategy, "bfd") if task.packing else None,
        neftune_noise_alpha=task.neftune_noise_alpha,
        completion_only_loss=task.completion_only_loss if task.HasField("completion_only_loss") else None,
        assistant_only_loss=task.assistant_only_loss,
    )


def classification_options(spec: job_pb2.JobSpec) -> ClassificationOptions:
    task = spec.classification
    return ClassificationOptions(max_length=task.max_length, pad_to_max_length=task.pad_to_max_length)


def resolve_plan(spec: job_pb2.JobSpec, plan: dict) -> dict:
    """`plan` with every resolved hyperparameter present: validation's plan unchanged, a plan stored
    before plans carried them (a job queued by an older server) completed from `spec` with the same
    defaults. The one place the worker gets its values from."""
    out = dict(plan)
    has_eval = bool(plan.get("eval_dataset"))
    out["hyperparameters"] = {**hyperparameters_entry(spec, has_eval, LEGACY_SEED),
                              **(plan.get("hyperparameters") or {})}
    if "lora" not in plan:
        resolved = lora(spec)
        out["lora"] = as_dict(resolved) if resolved is not None else None
    task = plan.get("task") or spec.WhichOneof("task")
    if task == "sft":
        out["sft"] = {**as_dict(sft_options(spec)), **(plan.get("sft") or {})}
    elif task == "classification":
        out["classification"] = {**as_dict(classification_options(spec)), **(plan.get("classification") or {})}
    return out
