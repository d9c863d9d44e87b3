"""Names and places of uploaded datasets: the content-address id, the checks of client-chosen names, and
the folders under the upload dir (partial/ for uploads in progress, datasets/ for stored files).

The bottom of the package (it imports nothing of it), so validation/sources.py can find a stored file
from a dataset id without the store: the id is the file's sha256, and its name on disk follows from it.
"""

from __future__ import annotations

import re
from pathlib import Path

from tunewire_server.errors import FieldViolation, InvalidSpec, preview

ID_PREFIX = "ds-"
FORMATS = ("jsonl", "csv", "tsv", "parquet")
EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
MAX_NAME = 255  # characters in a dataset's name
MAX_UPLOAD_ID = 128
MAX_LABEL_COLUMN = 256
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DATASET_ID = re.compile(r"ds-[0-9a-f]{64}")
_UPLOAD_ID = re.compile(r"[A-Za-z0-9._-]+")


def dataset_id(sha256: str) -> str:
    """The id of the dataset whose content hashes to `sha256` (lowercase hex)."""
    return ID_PREFIX + sha256


def check_dataset_id(value: str, field: str = "dataset_id") -> str:
    """A dataset id as this server issues them ("ds-" and 64 lowercase hex); InvalidSpec naming `field`
    for anything else, quoting at most a prefix of it."""
    if not value:
        raise InvalidSpec(FieldViolation(field, "is required"))
    if not _DATASET_ID.fullmatch(value):
        raise InvalidSpec(FieldViolation(field, f"is not a dataset id ('ds-' and 64 hex characters): {preview(value)}"))
    return value


def check_upload_id(value: str, field: str = "header.upload_id") -> str:
    if not value:
        raise InvalidSpec(FieldViolation(field, "is required (any 1-128 letters, digits, '-', '_', '.')"))
    if len(value) > MAX_UPLOAD_ID:
        raise InvalidSpec(FieldViolation(field, f"is {len(value)} characters long; at most {MAX_UPLOAD_ID}"))
    if not _UPLOAD_ID.fullmatch(value) or not value.isascii() or value in (".", ".."):
        raise InvalidSpec(FieldViolation(field, f"may hold letters, digits, '-', '_' and '.' only: {preview(value)}"))
    return value


def check_name(value: str, field: str = "header.name") -> str:
    """A dataset name: a file name, not a path. Refused: empty, too long, '/', '\\', NUL and other control
    characters, "." and ".."."""
    if not value:
        raise InvalidSpec(FieldViolation(field, "is required (the file name, e.g. train.jsonl)"))
    if len(value) > MAX_NAME:
        raise InvalidSpec(FieldViolation(field, f"is {len(value)} characters long; at most {MAX_NAME}"))
    if "/" in value or "\\" in value:
        raise InvalidSpec(FieldViolation(field, f"must be a file name without path separators: {preview(value)}"))
    if not value.isprintable():  # NUL, newlines and other control or unassigned characters
        raise InvalidSpec(FieldViolation(field, f"holds NUL or another control character: {preview(value)}"))
    if value.strip(".") == "":
        raise InvalidSpec(FieldViolation(field, f"is not a file name: {preview(value)}"))
    return value


def check_sha256(value: str, field: str = "header.sha256") -> str:
    """A sha256 as 64 hex characters, returned in lowercase."""
    lowered = value.lower()
    if not _SHA256.fullmatch(lowered):
        raise InvalidSpec(FieldViolation(field, f"is not a sha256 (64 hex characters): {preview(value)}"))
    return lowered


def check_label_column(value: str, field: str = "label_column") -> str:
    if len(value) > MAX_LABEL_COLUMN:
        raise InvalidSpec(FieldViolation(field, f"is {len(value)} characters long; at most {MAX_LABEL_COLUMN}"))
    if "\x00" in value:
        raise InvalidSpec(FieldViolation(field, "holds a NUL character"))
    return value


def format_of(name: str, declared: str | None, field: str = "header.format") -> str:
    """The declared format, or the one the name's extension says; InvalidSpec when neither tells."""
    if declared:
        return declared
    fmt = EXTENSIONS.get(Path(name).suffix.lower())
    if fmt is None:
        raise InvalidSpec(FieldViolation(field, f"cannot be told from the name {preview(name)}: set it, or name "
                                                "the file .jsonl, .json, .csv, .tsv or .parquet"))
    return fmt


def datasets_dir(upload_dir: Path) -> Path:
    """Where stored datasets' files live."""
    return upload_dir / "datasets"


def partial_dir(upload_dir: Path) -> Path:
    """Where uploads in progress keep the bytes received so far."""
    return upload_dir / "partial"


def stored_file_name(sha256: str, fmt: str) -> str:
    return f"{sha256}.{fmt}"


def partial_path(upload_dir: Path, upload_id: str) -> Path:
    return partial_dir(upload_dir) / f"{upload_id}.part"


def find_stored(upload_dir: Path, dataset_id_: str) -> tuple[str, str] | None:
    """(file name under datasets_dir, format) of a stored dataset's file, or None when there is none."""
    sha256 = dataset_id_.removeprefix(ID_PREFIX)
    folder = datasets_dir(upload_dir)
    for fmt in FORMATS:
        name = stored_file_name(sha256, fmt)
        if (folder / name).is_file():
            return name, fmt
    return None
