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
from tunewire_server import dataset_scan, request_limits
from tunewire_server.config import Settings
from tunewire_server.dataset_scan import DatasetProblem
from tunewire_server.errors import FieldViolation, InvalidSpec, preview
from tunewire_server.paths import (
    UnsafePath,
    looks_like_hub_id,
    open_regular,
    read_text_limited,
    resolve_under,
    special_entry,
)
from tunewire_server.request_limits import check_job_id, check_page_token, check_request_id

__all__ = ["validate", "spec_to_json", "spec_from_json", "check_request_id", "check_job_id", "check_page_token",
           "DatasetPlan", "MAX_LABELS"]

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
MAX_LABELS = 10_000  # classes a classifier may have; checked before anything is sized by a label


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
    # For a file: the dataset root and the path under it, so the worker opens the file the same safe way
    # at the moment it reads it (a path checked here may be a symlink leading elsewhere by then).
    root: str | None = None
    relative: str | None = None
    max_bytes: int | None = None  # the server's max_dataset_bytes, which the worker's read stops at
    format: str | None = None
    name: str | None = None
    config: str | None = None
    split: str | None = None
    rows: list | None = None
    max_samples: int = 0

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def spec_to_json(spec: job_pb2.JobSpec) -> str:
    """The spec as JSON. A spec that JSON cannot hold (NaN or infinity in an inline row) is InvalidSpec
    naming the row, whether or not it went through validate() first."""
    try:
        return json_format.MessageToJson(spec, indent=None, preserving_proto_field_name=True)
    except (json_format.Error, ValueError):
        problems = request_limits.check_rows(spec)
        if problems:
            raise InvalidSpec(problems) from None
        raise


def spec_from_json(text: str) -> job_pb2.JobSpec:
    return json_format.Parse(text, job_pb2.JobSpec())


def validate(spec: job_pb2.JobSpec, settings: Settings) -> dict:
    """Return the worker's plan for `spec`, or raise InvalidSpec with every problem found.

    Bounds on every value run first (request_limits: lengths, characters, enums, numbers, rows), and
    stop here when broken, so no later check sizes anything by or quotes an unbounded value; then cheap
    structural checks; the data scan runs only when the structure is sound.
    """
    v = Violations()
    request_limits.check_spec(spec, settings, v.add)
    v.raise_if_any()
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
        v.add(field, f"{preview(name)} is not on this server's model allow-list")
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
        special = special_entry(local)
        if special:
            v.add(field, f"folder {preview(name)} holds {preview(special)}, which is not a regular file; the "
                  "server reads regular files only")
            return None
        config = local / "config.json"
        if not config.exists():
            v.add(field, f"folder {preview(name)} has no config.json")
            return None
        try:
            cfg = json.loads(read_text_limited(config))
        except UnsafePath as exc:  # a FIFO, device or directory; or too large
            v.add(field, f"config.json of {preview(name)} {exc}")
            return None
        except RecursionError:
            v.add(field, f"config.json of {preview(name)} nests too deeply")
            return None
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else type(exc).__name__
            v.add(field, f"config.json of {preview(name)} is unreadable: {reason}")
            return None
        if not isinstance(cfg, dict) or "auto_map" in cfg:
            v.add(field, "models that need custom code (auto_map in config.json) are refused")
            return None
        return str(local)
    if settings.allow_hub_models and looks_like_hub_id(name) and "/" in name:
        return name
    v.add(field, f"{preview(name)} is not a folder under the model root and not an accepted hub id")
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
            v.add(f"lora.target_modules[{i}]", f"not a module name: {preview(name)}")


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
            v.add(f"{field}.hub.name", f"not a hub dataset id 'owner/name' (e.g. 'stanfordnlp/imdb'): {preview(name)}")
            return None
        return DatasetPlan("hub", name=name, config=ds.hub.config or None, split=ds.hub.split or default_split,
                           max_samples=ds.max_samples)
    if source == "inline":
        if len(ds.inline.rows) > settings.max_inline_rows:
            v.add(f"{field}.inline.rows",
                  f"has {len(ds.inline.rows)} rows; at most {settings.max_inline_rows} may be sent inline")
            return None
        size = ds.inline.ByteSize()
        if size > settings.max_inline_bytes:
            v.add(f"{field}.inline.rows", f"are {size} bytes; at most {settings.max_inline_bytes} may be sent inline "
                  "(put larger data in a file under the dataset root)")
            return None
        rows = request_limits.rows_of(ds, field, v.add)
        if rows is None:
            return None
        if not rows:
            v.add(f"{field}.inline.rows", "has no rows")
            return None
        return DatasetPlan("inline", rows=rows, max_samples=ds.max_samples)
    # file
    pfield = f"{field}.file.path"
    try:
        path = resolve_under(settings.dataset_root, ds.file.path)
    except UnsafePath as exc:
        v.add(pfield, str(exc))
        return None
    shown = preview(ds.file.path)
    try:
        if not path.exists():
            v.add(pfield, f"no file {shown} under the dataset root")
            return None
        fd = open_regular(path)  # never blocks: a FIFO or device is refused without reading it
        try:
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
    except UnsafePath as exc:
        v.add(pfield, f"{shown} {exc}")
        return None
    except OSError as exc:
        v.add(pfield, f"{shown} cannot be read: {exc.strerror or type(exc).__name__}")
        return None
    if size > settings.max_dataset_bytes:
        v.add(pfield, f"{shown} is {size} bytes; the limit is {settings.max_dataset_bytes}")
        return None
    try:
        fmt = dataset_scan.format_for(path, FILE_FORMATS.get(ds.file.format))
    except DatasetProblem as exc:
        v.add(f"{field}.file.format", str(exc))
        return None
    return DatasetPlan("file", path=str(path), format=fmt, max_samples=ds.max_samples,
                       root=str(settings.dataset_root), relative=ds.file.path, max_bytes=settings.max_dataset_bytes)


def _rows_of(plan: DatasetPlan, settings: Settings):
    if plan.kind == "inline":
        return enumerate(plan.rows, start=1)
    return dataset_scan.iter_file_rows(Path(plan.path), plan.format, max_bytes=settings.max_dataset_bytes)


def scan_dataset(plan: DatasetPlan | None, field: str, settings: Settings, v: Violations,
          check: Callable[[int, dict], None], label_field: str | None = None) -> dataset_scan.ScanResult | None:
    if plan is None or plan.kind == "hub":
        return None  # hub data is checked by the worker once downloaded
    try:
        return dataset_scan.scan_rows(_rows_of(plan, settings), max_rows=settings.max_dataset_rows, check=check,
                                      label_field=label_field, max_labels=MAX_LABELS if label_field else None)
    except DatasetProblem as exc:
        v.add(field, str(exc))
    except UnsafePath as exc:  # swapped for a FIFO or a device since it was checked, or grown too large
        v.add(field, str(exc))
    except OSError as exc:
        v.add(field, f"cannot be read: {exc.strerror or type(exc).__name__}")
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

    limit = len(declared) if declared else MAX_LABELS
    big_index_row: list[int] = []  # the first row whose label reads as a class index beyond MAX_LABELS

    def check(row_no: int, row: dict) -> None:
        dataset_scan.require_text(row_no, row, text_field)
        if task.text_pair_field:
            dataset_scan.require_text(row_no, row, task.text_pair_field)
        if label_field not in row:
            raise DatasetProblem(f"row {row_no}: column {preview(label_field)} is missing")
        label = row[label_field]
        if isinstance(label, str):
            if declared and label not in declared and not _is_index(label, limit):
                if _is_digits(label):
                    raise DatasetProblem(f"row {row_no}: label {preview(label)} is out of range for {limit} labels")
                raise DatasetProblem(f"row {row_no}: label {preview(label)} is not one of label_names")
            if not declared and _is_digits(label) and not _is_index(label, limit) and not big_index_row:
                big_index_row.append(row_no)
            return
        # A number must be a class index: checked here, one row at a time, against the label limit, so a
        # label of 1e300 is refused instead of sizing a list of names by it.
        dataset_scan.class_index(label, limit, row_no, label_field)

    train_scan = scan_dataset(train, "train_dataset", settings, v, check, label_field)
    scan_dataset(evals, "eval_dataset", settings, v, check, label_field)
    if train_scan is None:
        return declared or None
    if declared:
        return declared
    values = list(train_scan.label_values)
    if all(isinstance(x, str) for x in values):
        if all(_is_digits(x) for x in values):
            if big_index_row:
                v.add("train_dataset", f"row {big_index_row[0]}: a label read as a class index is {MAX_LABELS} or "
                      f"more; at most {MAX_LABELS} labels. To use such labels as names, set "
                      "classification.label_names")
                return None
            names = [str(i) for i in range(max(int(x) for x in values) + 1)]
        else:
            names = sorted(values)
    elif all(isinstance(x, (int, float)) for x in values):
        names = [str(i) for i in range(int(max(values)) + 1)]  # each checked by class_index: < MAX_LABELS
    else:
        v.add("train_dataset", "labels mix names and class indices; set classification.label_names")
        return None
    if len(names) < 2:
        v.add("train_dataset", f"needs at least 2 distinct labels, found {len(names)} "
              f"({', '.join(preview(x) for x in values[:2])})")
    if len(names) > MAX_LABELS:
        v.add("train_dataset", f"has {len(names)} labels; at most {MAX_LABELS}")
    if evals is not None and evals.kind != "hub" and not v.items:
        # eval labels must be known to the model trained on train's labels
        def check_eval(row_no: int, row: dict) -> None:
            label = row[label_field]
            if isinstance(label, str):
                if label not in names and not _is_index(label, len(names)):
                    raise DatasetProblem(f"row {row_no}: label {preview(label)} does not occur in train_dataset")
                return
            dataset_scan.class_index(label, len(names), row_no, label_field)

        scan_dataset(evals, "eval_dataset", settings, v, check_eval)
    return names


def _is_digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


def _is_index(value: str, n: int) -> bool:
    # the length test first: int() of a million digits is slow (and refused by Python beyond 4300)
    return _is_digits(value) and len(value.lstrip("0")) <= len(str(n)) and int(value) < n
