"""Check a JobSpec completely before it is queued, and resolve it into the plan a worker runs.

Every problem becomes a FieldViolation naming the JobSpec field (`train_dataset.file.path`) and,
for data, the row. Nothing here imports torch or grpc.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format

from tunewire.v1 import job_pb2
from tunewire_server import dataset_scan
from tunewire_server.config import Settings
from tunewire_server.dataset_scan import DatasetProblem
from tunewire_server.errors import FieldViolation, InvalidSpec
from tunewire_server.paths import UnsafePath, looks_like_hub_id, resolve_under

SCHEDULERS = frozenset({
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay",
})
FILE_FORMATS = {
    job_pb2.FILE_FORMAT_JSONL: "jsonl",
    job_pb2.FILE_FORMAT_CSV: "csv",
    job_pb2.FILE_FORMAT_TSV: "tsv",
    job_pb2.FILE_FORMAT_PARQUET: "parquet",
}
MAX_LABELS = 10_000


class Violations:
    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidSpec(self.items)


@dataclass
class DatasetPlan:
    """How the worker loads one dataset."""

    kind: str  # "file" | "hub" | "inline"
    path: str | None = None
    format: str | None = None
    name: str | None = None
    config: str | None = None
    split: str | None = None
    rows: list | None = None
    max_samples: int = 0

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def spec_to_json(spec: job_pb2.JobSpec) -> str:
    return json_format.MessageToJson(spec, indent=None, preserving_proto_field_name=True)


def spec_from_json(text: str) -> job_pb2.JobSpec:
    return json_format.Parse(text, job_pb2.JobSpec())


def validate(spec: job_pb2.JobSpec, settings: Settings) -> dict:
    """Return the worker's plan for `spec`, or raise InvalidSpec with every problem found.

    Cheap structural checks run first; the data scan runs only when the structure is sound.
    """
    v = Violations()
    task = spec.WhichOneof("task")
    model_path = _check_model(spec.base_model, settings, v)
    if task is None:
        v.add("task", "set exactly one task: classification or sft")
    _check_hyperparameters(spec, settings, v)
    _check_lora(spec, task, v)
    if not spec.HasField("train_dataset"):
        v.add("train_dataset", "is required")
    train = _check_dataset_source(spec.train_dataset, "train_dataset", "train", settings, v) \
        if spec.HasField("train_dataset") else None
    evals = _check_dataset_source(spec.eval_dataset, "eval_dataset", "validation", settings, v) \
        if spec.HasField("eval_dataset") else None
    if task == "classification":
        _check_classification_options(spec.classification, settings, v)
    elif task == "sft":
        from tunewire_server import validation_sft

        validation_sft.check_options(spec, settings, v)
    v.raise_if_any()

    plan: dict = {
        "task": task,
        "base_model": model_path,
        "train_dataset": train.to_dict(),
        "eval_dataset": evals.to_dict() if evals else None,
    }
    if task == "classification":
        plan["label_names"] = _scan_classification(spec, train, evals, settings, v)
    elif task == "sft":
        from tunewire_server import validation_sft

        plan.update(validation_sft.scan(spec, train, evals, settings, v))
    v.raise_if_any()
    return plan


# --- model --------------------------------------------------------------------------------------


def _check_model(name: str, settings: Settings, v: Violations) -> str | None:
    field = "base_model"
    if not name.strip():
        v.add(field, "is required: a hub id or a folder under the server's model root")
        return None
    allowed = [p.strip() for p in settings.allowed_models.split(",") if p.strip()]
    if allowed and not any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed):
        v.add(field, f"{name!r} is not on this server's model allow-list")
        return None
    try:
        local = resolve_under(settings.model_root, name)
    except UnsafePath as exc:
        v.add(field, str(exc))
        return None
    try:
        is_local = local.is_dir()
    except OSError as exc:
        v.add(field, f"cannot be read: {exc.strerror or exc}")
        return None
    if is_local:
        config = local / "config.json"
        if not config.is_file():
            v.add(field, f"folder {name!r} has no config.json")
            return None
        try:
            cfg = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            v.add(field, f"config.json of {name!r} is unreadable: {exc}")
            return None
        if not isinstance(cfg, dict) or "auto_map" in cfg:
            v.add(field, "models that need custom code (auto_map in config.json) are refused")
            return None
        return str(local)
    if settings.allow_hub_models and looks_like_hub_id(name) and "/" in name:
        return name
    v.add(field, f"{name!r} is not a folder under the model root and not an accepted hub id")
    return None


# --- hyperparameters ----------------------------------------------------------------------------


def _check_hyperparameters(spec: job_pb2.JobSpec, settings: Settings, v: Violations) -> None:
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
        v.add(f + "lr_scheduler_type", f"unknown scheduler {hp.lr_scheduler_type!r}; one of {', '.join(sorted(SCHEDULERS))}")
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


def _check_lora(spec: job_pb2.JobSpec, task: str | None, v: Violations) -> None:
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
            v.add(f"lora.target_modules[{i}]", f"not a module name: {name!r}")


# --- datasets -----------------------------------------------------------------------------------


def _check_dataset_source(ds: job_pb2.Dataset, field: str, default_split: str, settings: Settings,
                          v: Violations) -> DatasetPlan | None:
    source = ds.WhichOneof("source")
    if source is None:
        v.add(field, "set one source: hub, file or inline")
        return None
    if source == "hub":
        name = ds.hub.name
        if not looks_like_hub_id(name) or "/" not in name:
            # A bare name ("text", "json", "imdb") would also name one of the datasets library's local
            # builders or a folder beside the worker, which read files the server never meant to give out.
            v.add(f"{field}.hub.name", f"not a hub dataset id 'owner/name' (e.g. 'stanfordnlp/imdb'): {name!r}")
            return None
        return DatasetPlan("hub", name=name, config=ds.hub.config or None, split=ds.hub.split or default_split,
                           max_samples=ds.max_samples)
    if source == "inline":
        rows = [json_format.MessageToDict(r) for r in ds.inline.rows]
        if not rows:
            v.add(f"{field}.inline.rows", "has no rows")
            return None
        if len(rows) > settings.max_inline_rows:
            v.add(f"{field}.inline.rows", f"has {len(rows)} rows; at most {settings.max_inline_rows} may be sent inline")
            return None
        return DatasetPlan("inline", rows=rows, max_samples=ds.max_samples)
    # file
    pfield = f"{field}.file.path"
    try:
        path = resolve_under(settings.dataset_root, ds.file.path)
    except UnsafePath as exc:
        v.add(pfield, str(exc))
        return None
    try:
        if not path.is_file():
            v.add(pfield, f"no file {ds.file.path!r} under the dataset root")
            return None
        if not os.access(path, os.R_OK):
            v.add(pfield, f"{ds.file.path!r} is not readable")
            return None
        size = path.stat().st_size
    except OSError as exc:
        v.add(pfield, f"cannot be read: {exc.strerror or exc}")
        return None
    if size > settings.max_dataset_bytes:
        v.add(pfield, f"{ds.file.path!r} is {size} bytes; the limit is {settings.max_dataset_bytes}")
        return None
    try:
        fmt = dataset_scan.format_for(path, FILE_FORMATS.get(ds.file.format))
    except DatasetProblem as exc:
        v.add(f"{field}.file.format", str(exc))
        return None
    return DatasetPlan("file", path=str(path), format=fmt, max_samples=ds.max_samples)


def _rows_of(plan: DatasetPlan):
    if plan.kind == "inline":
        return enumerate(plan.rows, start=1)
    return dataset_scan.iter_file_rows(Path(plan.path), plan.format)


def scan_dataset(plan: DatasetPlan | None, field: str, settings: Settings, v: Violations,
          check: Callable[[int, dict], None], label_field: str | None = None) -> dataset_scan.ScanResult | None:
    if plan is None or plan.kind == "hub":
        return None  # hub data is checked by the worker once downloaded
    try:
        return dataset_scan.scan_rows(_rows_of(plan), max_rows=settings.max_dataset_rows, check=check,
                                      label_field=label_field)
    except DatasetProblem as exc:
        v.add(field, str(exc))
    except OSError as exc:
        v.add(field, f"cannot be read: {exc.strerror or exc}")
    return None


# --- classification ------------------------------------------------------------------------------


def _check_classification_options(task: job_pb2.ClassificationTask, settings: Settings, v: Violations) -> None:
    names = list(task.label_names)
    if names:
        if len(names) < 2:
            v.add("classification.label_names", "needs at least 2 labels")
        if len(set(names)) != len(names):
            v.add("classification.label_names", "has duplicate names")
        if any(not n.strip() for n in names):
            v.add("classification.label_names", "has an empty name")
    if task.max_length > settings.max_seq_length:
        v.add("classification.max_length", f"must be at most {settings.max_seq_length} (server limit)")
    if task.pad_to_max_length and task.max_length == 0:
        v.add("classification.max_length", "pad_to_max_length needs a max_length")


def _scan_classification(spec: job_pb2.JobSpec, train: DatasetPlan, evals: DatasetPlan | None,
                         settings: Settings, v: Violations) -> list[str] | None:
    task = spec.classification
    text_field = task.text_field or "text"
    label_field = task.label_field or "label"
    declared = list(task.label_names)

    def check(row_no: int, row: dict) -> None:
        dataset_scan.require_text(row_no, row, text_field)
        if task.text_pair_field:
            dataset_scan.require_text(row_no, row, task.text_pair_field)
        if label_field not in row:
            raise DatasetProblem(f"row {row_no}: column {label_field!r} is missing")
        label = row[label_field]
        if isinstance(label, bool) or not isinstance(label, (str, int, float)):
            raise DatasetProblem(f"row {row_no}: label must be a name or a class index, got {label!r}")
        if isinstance(label, float) and not label.is_integer():
            raise DatasetProblem(f"row {row_no}: label {label!r} is not a class index")
        if declared:
            if isinstance(label, str) and label not in declared and not _is_index(label, len(declared)):
                if label.isdigit():
                    raise DatasetProblem(f"row {row_no}: label {label!r} is out of range for {len(declared)} labels")
                raise DatasetProblem(f"row {row_no}: label {label!r} is not one of label_names")
            if isinstance(label, (int, float)) and not 0 <= label < len(declared):
                raise DatasetProblem(f"row {row_no}: label {label!r} is out of range for {len(declared)} labels")

    train_scan = scan_dataset(train, "train_dataset", settings, v, check, label_field)
    scan_dataset(evals, "eval_dataset", settings, v, check, label_field)
    if train_scan is None:
        return declared or None
    if declared:
        return declared
    values = list(train_scan.label_values)
    if all(isinstance(x, str) for x in values):
        if all(_is_index(x, 1 << 30) for x in values):
            names = [str(i) for i in range(max(int(x) for x in values) + 1)]
        else:
            names = sorted(values)
    elif all(isinstance(x, (int, float)) for x in values):
        names = [str(i) for i in range(int(max(values)) + 1)]
        if min(values) < 0:
            v.add("train_dataset", "class indices must not be negative; or set classification.label_names")
    else:
        v.add("train_dataset", "labels mix names and class indices; set classification.label_names")
        return None
    if len(names) < 2:
        v.add("train_dataset", f"needs at least 2 distinct labels, found {len(names)} ({', '.join(map(str, values))})")
    if len(names) > MAX_LABELS:
        v.add("train_dataset", f"has {len(names)} labels; at most {MAX_LABELS}")
    if evals is not None and evals.kind != "hub" and not v.items:
        # eval labels must be known to the model trained on train's labels
        def check_eval(row_no: int, row: dict) -> None:
            label = row[label_field]
            if isinstance(label, str) and label not in names and not _is_index(label, len(names)):
                raise DatasetProblem(f"row {row_no}: label {label!r} does not occur in train_dataset")
            if isinstance(label, (int, float)) and not 0 <= label < len(names):
                raise DatasetProblem(f"row {row_no}: label {label!r} is out of range for {len(names)} labels")

        scan_dataset(evals, "eval_dataset", settings, v, check_eval)
    return names


def _is_index(value: str, n: int) -> bool:
    return value.isdigit() and int(value) < n
