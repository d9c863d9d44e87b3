"""Classification options, and the scan of its data that finds (or checks) the label names."""

from __future__ import annotations

import json
import math

from tunewire.v1 import job_pb2
from tunewire_server import hyperparameters as definition
from tunewire_server.config import Settings
from tunewire_server.errors import preview
from tunewire_server.validation.common import MAX_LABELS, DatasetPlan, Violations
from tunewire_server.validation.dataset_scan import DatasetProblem, class_index, require_text, scan_dataset
from tunewire_server.validation.hyperparameters import check_section
from tunewire_server.validation.limits import LINE, string_problem
from tunewire_server.validation.model import local_model, max_positions, read_config

WEIGHTS = "classification.class_weights"


def check_options(task: job_pb2.ClassificationTask, settings: Settings, v: Violations) -> None:
    names = list(task.label_names)
    if names:
        if len(names) < 2:
            v.add("classification.label_names", "needs at least 2 labels")
        if len(set(names)) != len(names):
            v.add("classification.label_names", "has duplicate names")
        if any(not n.strip() for n in names):
            v.add("classification.label_names", "has an empty name")
    check_section(task, definition.ClassificationOptions, "classification.", settings, v)  # max_length
    if task.pad_to_max_length and task.max_length == 0:
        v.add("classification.max_length", "pad_to_max_length needs a max_length")
    check_class_weights(task.class_weights, names or None, v)


def check_positions(task: job_pb2.ClassificationTask, base_model: str, settings: Settings, v: Violations) -> None:
    """max_length within the positions of a local model (its config.json): more would fail in training, at the
    first batch that long, with a tensor-size error."""
    folder = local_model(base_model, settings) if task.max_length else None
    limit = max_positions(read_config(folder)) if folder is not None else None
    if limit is not None and task.max_length > limit:
        v.add("classification.max_length", f"{task.max_length} exceeds the model's {limit} positions")


def check_class_weights(weights: job_pb2.ClassWeights, names: list[str] | None, v: Violations) -> None:
    """Exactly one of `balanced` and `per_label`; each named label one of `names` (None: not known yet, see
    `scan`), each weight finite and above 0."""
    if weights.balanced and weights.per_label:
        v.add(WEIGHTS, "set either balanced or per_label, not both")
    if len(weights.per_label) > MAX_LABELS:  # the map is not bounded by limits.py: its size and keys are here
        v.add(f"{WEIGHTS}.per_label", f"has {len(weights.per_label)} entries; at most {MAX_LABELS}")
        return
    for name, weight in sorted(weights.per_label.items()):
        field = f"{WEIGHTS}.per_label[{_quoted(name)}]"
        problem = string_problem(name, 256, LINE)
        if problem:
            v.add(field, f"the label name {problem}")
            continue
        if not math.isfinite(weight) or weight <= 0:
            v.add(field, f"must be a finite number above 0, got {weight}")
        if names is not None and name not in names:
            v.add(field, f"is not one of the labels ({', '.join(preview(n) for n in names[:10])}"
                  f"{', ...' if len(names) > 10 else ''})")


def _quoted(name: str) -> str:
    return json.dumps(name) if len(name) <= 64 else preview(name)


def scan(spec: job_pb2.JobSpec, train: DatasetPlan, evals: DatasetPlan | None,
                         settings: Settings, v: Violations) -> list[str] | None:
    task = spec.classification
    text_field = task.text_field or "text"
    label_field = task.label_field or "label"
    declared = list(task.label_names)

    limit = len(declared) if declared else MAX_LABELS
    big_index_row: list[int] = []  # the first row whose label reads as a class index beyond MAX_LABELS

    def check(row_no: int, row: dict) -> None:
        require_text(row_no, row, text_field)
        if task.text_pair_field:
            require_text(row_no, row, task.text_pair_field)
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
        class_index(label, limit, row_no, label_field)

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
    if task.class_weights.per_label and not v.items:  # the names are known only now
        check_class_weights(job_pb2.ClassWeights(per_label=task.class_weights.per_label), names, v)
    if evals is not None and evals.kind != "hub" and not v.items:
        # eval labels must be known to the model trained on train's labels
        def check_eval(row_no: int, row: dict) -> None:
            label = row[label_field]
            if isinstance(label, str):
                if label not in names and not _is_index(label, len(names)):
                    raise DatasetProblem(f"row {row_no}: label {preview(label)} does not occur in train_dataset")
                return
            class_index(label, len(names), row_no, label_field)

        scan_dataset(evals, "eval_dataset", settings, v, check_eval)
    return names


def _is_digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


def _is_index(value: str, n: int) -> bool:
    # the length test first: int() of a million digits is slow (and refused by Python beyond 4300)
    return _is_digits(value) and len(value.lstrip("0")) <= len(str(n)) and int(value) < n
