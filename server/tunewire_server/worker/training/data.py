"""Load a job's datasets (file, hub or inline) as `datasets.Dataset` objects.

A dataset file is opened the same safe way validation checked it, at the moment it is read: the path
under the dataset root is resolved again (a symlink swapped in after the job was accepted, leading out of
the root, is refused), only a regular file is read, and the opened file is hard-linked (or, across
filesystems, copied) into the job's folder, so the `datasets` library reads that very file whatever the
path points at by then. Errors name the field and never
quote the data (a library's parse error can carry a row's text, so only its type is reported).
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets

from tunewire_server.errors import preview
from tunewire_server.validation.paths import UnsafePath, open_regular, open_under
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
        copy = _private_copy(plan, field, cache_dir)
        try:
            ds = datasets.load_dataset(_BUILDERS[fmt], data_files=str(copy), split="train",
                                       cache_dir=str(cache_dir), **kwargs)
        except Exception as exc:  # a parse error's message may quote the data: report its type only
            if _system_cause(exc):
                raise  # a full disk or no memory while caching is no fault of the data
            raise UserError("INVALID_DATA", f"cannot be read as {fmt} ({type(exc).__name__})",
                            f"{field}.file.path") from None
        finally:
            copy.unlink(missing_ok=True)
    elif kind == "hub":
        try:
            ds = datasets.load_dataset(plan["name"], plan.get("config"), split=plan["split"], cache_dir=str(cache_dir))
        except Exception as exc:  # network, missing split, unknown name: all the user's to fix
            raise UserError("DATASET_UNAVAILABLE", f"cannot load hub dataset {preview(plan['name'])}: "
                            f"{str(exc)[:300]}", f"{field}.hub.name") from None
    else:
        raise ValueError(f"unknown dataset kind {kind!r}")
    if len(ds) == 0:
        raise UserError("INVALID_DATA", "the dataset has no rows", field)
    n = plan.get("max_samples") or 0
    if 0 < n < len(ds):
        ds = ds.shuffle(seed=seed).select(range(n))
    return ds


def _system_cause(exc: BaseException) -> bool:
    """Whether an OSError or MemoryError is in `exc`'s chain (the datasets library wraps what it meets)."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, (OSError, MemoryError)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _private_copy(plan: dict, field: str, cache_dir: Path) -> Path:
    """Link (or copy) the plan's dataset file, opened safely under its root, into the job's cache folder."""
    pfield = f"{field}.file.path"
    try:
        if plan.get("root") is not None and plan.get("relative") is not None:
            source = Path(plan["root"]) / plan["relative"]
            fd = open_under(plan["root"], plan["relative"])
        else:  # a plan written before plans carried the root: the resolved path, no symlink followed
            source = Path(plan["path"])
            fd = open_regular(plan["path"], follow_symlinks=False)
    except UnsafePath as exc:
        raise UserError("INVALID_DATA", f"the dataset file {exc}", pfield) from None
    except OSError as exc:
        raise UserError("INVALID_DATA", f"the dataset file cannot be opened: {exc.strerror or type(exc).__name__}",
                        pfield) from None
    limit = plan.get("max_bytes")
    cache_dir.mkdir(parents=True, exist_ok=True)
    # One name per process: the ranks of a multi-process job load the same dataset side by side.
    copy = cache_dir / f"{field}.{os.getpid()}.{plan['format']}"
    copy.unlink(missing_ok=True)
    if limit is not None and os.fstat(fd).st_size > limit:  # grown since it was checked
        os.close(fd)
        raise UserError("INVALID_DATA", f"the dataset file is larger than {limit} bytes", pfield)
    if _link_same_file(fd, source, copy):
        os.close(fd)
        return copy
    try:
        with open(fd, "rb") as src, open(copy, "wb") as dst:
            size = 0
            while chunk := src.read(1 << 20):
                size += len(chunk)
                if limit is not None and size > limit:  # grown since it was checked
                    raise UserError("INVALID_DATA", f"the dataset file is larger than {limit} bytes", pfield)
                dst.write(chunk)
    except BaseException:
        copy.unlink(missing_ok=True)
        raise
    return copy


def _link_same_file(fd: int, source: Path, link: Path) -> bool:
    """Hard-link `source` as `link` if it still is the file open as `fd` (a link costs no copy). The
    path may have been swapped since it was opened: then the link names another file and is dropped."""
    try:
        os.link(source, link, follow_symlinks=False)
    except OSError:  # another filesystem, or a filesystem without hard links
        return False
    opened, linked = os.fstat(fd), os.lstat(link)
    if (opened.st_dev, opened.st_ino) == (linked.st_dev, linked.st_ino):
        return True
    link.unlink(missing_ok=True)
    return False


def require_columns(ds: datasets.Dataset, columns: list[str], field: str) -> None:
    for column in columns:
        if column not in ds.column_names:
            shown = ", ".join(preview(c) for c in ds.column_names[:8])
            raise UserError("INVALID_DATA", f"column {preview(column)} is missing (columns: {shown})", field)
