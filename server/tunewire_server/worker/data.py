"""Load a job's datasets (file, hub or inline) as `datasets.Dataset` objects."""

from __future__ import annotations

from pathlib import Path

import datasets

from tunewire_server.worker.runtime import UserError

_BUILDERS = {"jsonl": "json", "csv": "csv", "tsv": "csv", "parquet": "parquet"}


def load(plan: dict, field: str, seed: int, cache_dir: Path) -> datasets.Dataset:
    kind = plan["kind"]
    if kind == "inline":
        ds = datasets.Dataset.from_list(plan["rows"])
    elif kind == "file":
        fmt = plan["format"]
        kwargs: dict = {}
        if fmt in ("csv", "tsv"):
            kwargs = {"keep_default_na": False}  # a review that says "NA" is text, not a missing value
            if fmt == "tsv":
                kwargs["delimiter"] = "\t"
        ds = datasets.load_dataset(_BUILDERS[fmt], data_files=plan["path"], split="train",
                                   cache_dir=str(cache_dir), **kwargs)
    elif kind == "hub":
        try:
            ds = datasets.load_dataset(plan["name"], plan.get("config"), split=plan["split"], cache_dir=str(cache_dir))
        except Exception as exc:  # network, missing split, unknown name: all the user's to fix
            raise UserError("DATASET_UNAVAILABLE", f"cannot load hub dataset {plan['name']!r}: {exc}",
                            f"{field}.hub.name") from None
    else:
        raise ValueError(f"unknown dataset kind {kind!r}")
    if len(ds) == 0:
        raise UserError("INVALID_DATA", "the dataset has no rows", field)
    n = plan.get("max_samples") or 0
    if 0 < n < len(ds):
        ds = ds.shuffle(seed=seed).select(range(n))
    return ds


def require_columns(ds: datasets.Dataset, columns: list[str], field: str) -> None:
    for column in columns:
        if column not in ds.column_names:
            raise UserError("INVALID_DATA", f"column {column!r} is missing (columns: {', '.join(ds.column_names)})",
                            field)
