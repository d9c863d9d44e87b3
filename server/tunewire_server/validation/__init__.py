"""Everything checked before a job is queued, and the plan the worker runs.

    from tunewire_server import validation
    plan = validation.validate(spec, settings)   # or InvalidSpec naming every field at fault

Modules, each one idea; imports point down this list only (no cycles):
    paths           safe opens of client-named files under a root (a leaf)
    generation      Predict's GenerationParams (a leaf; the inference worker imports it)
    common          Violations, DatasetPlan, shared constants (MAX_LABELS, FILE_FORMATS, CHAT_ROLES)
    limits          bounds on every value a request carries; request, job and page-token ids
    dataset_scan    reading and checking rows of local data
    model, hyperparameters, sources   the base model; training and LoRA values; where data comes from
    classification, sft               each task's options and data scan
    spec            validate(), spec_to_json(), spec_from_json(): the orchestration

This file imports none of them eagerly: Python runs a package's __init__ whenever one of its modules is
imported, and the worker processes import leaves (paths, generation, dataset_scan, sft) that must not
drag in the rest. The entry points below are loaded on first use.
"""

from __future__ import annotations

import importlib

__all__ = ["validate", "spec_to_json", "spec_from_json", "check_request_id", "check_job_id", "check_page_token",
           "DatasetPlan", "MAX_LABELS"]

_HOME = {
    "validate": "spec", "spec_to_json": "spec", "spec_from_json": "spec",
    "check_request_id": "limits", "check_job_id": "limits", "check_page_token": "limits",
    "DatasetPlan": "common", "MAX_LABELS": "common",
}


def __getattr__(name: str):
    if name in _HOME:
        value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
