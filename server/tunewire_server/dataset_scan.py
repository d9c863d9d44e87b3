"""Read dataset rows in the control plane, without torch or `datasets`, to check them before queueing.

Row numbers in messages are 1-based data rows (a CSV header is not counted).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


class DatasetProblem(ValueError):
    """What is wrong, in words that name the row; the caller adds the field."""


def format_for(path: Path, declared: str | None) -> str:
    if declared:
        return declared
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DatasetProblem(
            f"cannot tell the format of {path.name!r}; use a .jsonl, .csv, .tsv or .parquet file or set format"
        )
    return fmt


def iter_file_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict]]:
    if fmt == "parquet":
        yield from _parquet_rows(path)
        return
    with open(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")
        try:
            if fmt == "jsonl":
                yield from _jsonl_rows(text)
            else:
                yield from _csv_rows(text, "\t" if fmt == "tsv" else ",")
        except UnicodeDecodeError as exc:
            raise DatasetProblem(f"is not UTF-8 text (byte offset {exc.start} of a chunk near the failing row)") from None


def _jsonl_rows(text: io.TextIOBase) -> Iterator[tuple[int, dict]]:
    row_no = 0
    line_no = 0
    while True:
        try:
            line = text.readline()
        except UnicodeDecodeError:
            raise DatasetProblem(f"line {line_no + 1}: is not UTF-8 text") from None
        if not line:
            return
        line_no += 1
        if not line.strip():
            continue
        row_no += 1
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetProblem(f"row {row_no} (line {line_no}): not valid JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise DatasetProblem(f"row {row_no} (line {line_no}): must be a JSON object, got {type(row).__name__}")
        yield row_no, row


def _csv_rows(text: io.TextIOBase, delimiter: str) -> Iterator[tuple[int, dict]]:
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except UnicodeDecodeError:
        raise DatasetProblem("the header line is not UTF-8 text") from None
    if len(set(header)) != len(header):
        raise DatasetProblem("the header repeats a column name")
    row_no = 0
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            raise DatasetProblem(f"row {row_no + 1}: is not UTF-8 text") from None
        except csv.Error as exc:
            raise DatasetProblem(f"row {row_no + 1}: {exc}") from None
        if not values:
            continue
        row_no += 1
        if len(values) != len(header):
            raise DatasetProblem(f"row {row_no}: has {len(values)} fields, the header has {len(header)}")
        yield row_no, dict(zip(header, values, strict=True))


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq  # no torch; only loaded for parquet files

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise DatasetProblem(f"is not a readable Parquet file: {exc}") from None
    row_no = 0
    for batch in pf.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            row_no += 1
            yield row_no, row


@dataclass
class ScanResult:
    num_rows: int = 0
    columns: set[str] = field(default_factory=set)
    label_values: dict = field(default_factory=dict)  # value -> count


RowCheck = Callable[[int, dict], None]


def scan_rows(rows: Iterator[tuple[int, dict]], *, max_rows: int, check: RowCheck,
              label_field: str | None = None) -> ScanResult:
    """Run `check` on every row (it raises DatasetProblem), counting rows and label values."""
    result = ScanResult()
    for row_no, row in rows:
        if row_no > max_rows:
            raise DatasetProblem(f"has more than the {max_rows} rows this server accepts")
        if row_no == 1:
            result.columns = set(row)
        check(row_no, row)
        if label_field is not None:
            value = row.get(label_field)
            result.label_values[value] = result.label_values.get(value, 0) + 1
        result.num_rows = row_no
    if result.num_rows == 0:
        raise DatasetProblem("has no rows")
    return result


def require_text(row_no: int, row: dict, column: str) -> str:
    if column not in row:
        raise DatasetProblem(f"row {row_no}: column {column!r} is missing (columns: {', '.join(sorted(map(str, row)))})")
    value = row[column]
    if not isinstance(value, str):
        raise DatasetProblem(f"row {row_no}: column {column!r} must be text, got {type(value).__name__}")
    if not value.strip():
        raise DatasetProblem(f"row {row_no}: column {column!r} is empty")
    return value


def label_index(value, names: list[str]) -> int:
    """The class index of a label value: a name in `names`, or an index (int or digit string)."""
    if isinstance(value, str):
        if value in names:
            return names.index(value)
        if value.isdigit():
            return int(value)
        raise DatasetProblem(f"label {value!r} is not one of {names}")
    return int(value)
