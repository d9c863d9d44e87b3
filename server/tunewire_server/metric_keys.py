"""How a classifier's per-class metrics are named: `precision_<label>`, `recall_<label>`, `f1_<label>`, with
the label as metric_names() writes it. Shared by the worker that reports them and the validation of
metric_for_best_model, so that a name the validation accepts is one the worker reports."""

from __future__ import annotations

import re

PER_CLASS = ("precision", "recall", "f1")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def metric_names(label_names: list[str]) -> list[str]:
    """Each label's name as it appears in a metric key: characters outside [A-Za-z0-9_-] become `_`; a name
    that would then repeat an earlier one gets its class index appended, so every key stays distinct."""
    out: list[str] = []
    for i, name in enumerate(label_names):
        safe = _UNSAFE.sub("_", name) or f"class{i}"
        out.append(f"{safe}_{i}" if safe in out else safe)
    return out


def per_class_keys(label_names: list[str]) -> list[str]:
    """Every per-class metric key a classifier with these labels reports."""
    return [f"{kind}_{name}" for name in metric_names(label_names) for kind in PER_CLASS]
