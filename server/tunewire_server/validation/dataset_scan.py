"""Read dataset rows in the control plane, without torch or `datasets`, to check them before queueing:
the readers (JSONL, CSV/TSV, Parquet), the row checks the tasks share, and scan_dataset, which runs a
task's row check over a planned dataset. The classification worker imports label_index from here.

Row numbers in messages are 1-based data rows (a CSV header is not counted). Messages name the row and
the column and quote at most a short prefix of a value (errors.preview), never a row.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import orjson

from tunewire_server.errors import preview
from tunewire_server.validation.paths import FileTooLarge, UnsafePath, open_regular

if TYPE_CHECKING:  # common imports the protobuf messages: not loaded by an upload's check process
    from tunewire_server.config import Settings
    from tunewire_server.validation.common import DatasetPlan, Violations

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
MAX_LINE_CHARS = 64 * 1024 * 1024  # one JSONL row; longer ones are refused instead of read whole


class DatasetProblem(ValueError):
    """What is wrong, in words that name the row; the caller adds the field."""


def format_for(path: Path, declared: str | None) -> str:
    if declared:
        return declared
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DatasetProblem(
            f"cannot tell the format of {preview(path.name)}; use a .jsonl, .csv, .tsv or .parquet file or set format"
        )
    return fmt


def iter_file_rows(path: Path, fmt: str, max_bytes: int | None = None) -> Iterator[tuple[int, dict]]:
    """The rows of a regular file (paths.NotRegularFile for a FIFO, device or directory: opening never
    blocks), reading at most `max_bytes` (paths.FileTooLarge beyond)."""
    fd = open_regular(path)
    size = os.fstat(fd).st_size
    if max_bytes is not None and size > max_bytes:
        os.close(fd)
        raise FileTooLarge(f"is {size} bytes; the limit is {max_bytes}")
    if fmt == "parquet":
        with open(fd, "rb") as raw:
            yield from _parquet_rows(raw)
        return
    with open(fd, "rb") as raw:
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
            line = text.readline(MAX_LINE_CHARS + 1)
        except UnicodeDecodeError:
            raise DatasetProblem(f"line {line_no + 1}: is not UTF-8 text") from None
        if not line:
            return
        line_no += 1
        if len(line) > MAX_LINE_CHARS:
            raise DatasetProblem(f"line {line_no}: is longer than {MAX_LINE_CHARS} characters")
        if not line.strip():
            continue
        row_no += 1
        yield row_no, _parse_row(line, row_no, line_no)


def _parse_row(line: str, row_no: int, line_no: int) -> dict:
    """One JSONL row; DatasetProblem naming the row and the line when it is not a JSON object."""
    try:
        row = _loads(line)
    except json.JSONDecodeError as exc:
        raise DatasetProblem(f"row {row_no} (line {line_no}): not valid JSON: {exc.msg}") from None
    except _NonFinite as exc:
        raise DatasetProblem(f"row {row_no} (line {line_no}): {exc} is not valid JSON (and not a number a "
                             "dataset can hold)") from None
    except RecursionError:
        raise DatasetProblem(f"row {row_no} (line {line_no}): nests too deeply") from None
    if not isinstance(row, dict):
        raise DatasetProblem(f"row {row_no} (line {line_no}): must be a JSON object, got {type(row).__name__}")
    return row


READ_BLOCK = 1024 * 1024


def jsonl_rows_escaped(raw: BinaryIO) -> Iterator[tuple[int, dict]]:
    """The rows of a JSONL byte stream exactly as `_jsonl_rows` reads them through a TextIOWrapper with
    errors="surrogateescape" and newline="" (the same rows, numbers, values and DatasetProblems), about
    twice as fast: lines are found in the bytes (ending at \\n, \\r\\n or a lone \\r, as universal
    newlines end them) and handed to orjson without a copy; a line orjson does not take as a JSON object
    (blank, not UTF-8, NaN, a big integer...) is decoded and read by the same code as `_jsonl_rows`."""
    row_no = line_no = 0
    pending: list[bytes] = []  # the start of a line whose end has not been read yet
    pending_len = 0
    while True:
        block = raw.read(READ_BLOCK)
        if block and b"\n" not in block and b"\r" not in block:  # the middle of a long line
            pending.append(block)
            pending_len += len(block)
            if pending_len > 4 * (MAX_LINE_CHARS + 1):  # more characters than that, whatever the bytes are
                raise DatasetProblem(f"line {line_no + 1}: is longer than {MAX_LINE_CHARS} characters")
            continue
        pending.append(block)
        data = b"".join(pending) if len(pending) > 1 else block
        pending, pending_len = [], 0
        if not data:
            return
        if b"\r" in data:
            lines: Iterable = data.splitlines(keepends=True)
            if block and not lines[-1].endswith(b"\n"):  # unfinished, or a \r that a \n may follow
                pending.append(lines.pop())
        else:
            end = len(data) if not block else data.rfind(b"\n") + 1
            if end < len(data):
                pending.append(data[end:])
            lines = _lf_lines(data, end)
        pending_len = len(pending[0]) if pending else 0
        for line in lines:
            line_no += 1
            if len(line) > MAX_LINE_CHARS and _chars(line) > MAX_LINE_CHARS:
                raise DatasetProblem(f"line {line_no}: is longer than {MAX_LINE_CHARS} characters")
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                row = None
            if type(row) is dict and not _big_float(row):
                row_no += 1
                yield row_no, row
                continue
            text = bytes(line).decode("utf-8", "surrogateescape")
            if not text.strip():
                continue
            row_no += 1
            yield row_no, _parse_row(text, row_no, line_no)
        if not block:
            return


def _lf_lines(data: bytes, end: int) -> Iterator[memoryview]:
    """The lines of data[:end] (which holds no \\r), each with its \\n, as views (no copy)."""
    view, find, pos = memoryview(data), data.find, 0
    while pos < end:
        stop = find(b"\n", pos, end)
        stop = end if stop < 0 else stop + 1
        yield view[pos:stop]
        pos = stop


def _chars(line) -> int:
    return len(bytes(line).decode("utf-8", "surrogateescape"))


class _NonFinite(ValueError):
    pass


def _loads(line: str):
    """json.loads of one row, exactly (the same values, the same errors), mostly through orjson (about four
    times faster). orjson refuses what Python's json may take (NaN, 1e400, lone surrogates, deep nesting):
    then json decides, with its own error. orjson turns an integer past 64 bits into a float where json
    keeps the int: a row holding a float that large is read again with json."""
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line, parse_constant=_no_constant)
    if _big_float(row):
        return json.loads(line, parse_constant=_no_constant)
    return row


_BIG = 9.2e18  # just under 2**63: orjson reads integer literals from -2**63 to 2**64-1 exactly


def _big_float(value) -> bool:
    """Whether a parsed value holds a float as large as an integer orjson would not read exactly."""
    for v in (value.values() if type(value) is dict else value):
        t = type(v)
        if t is str or t is int or v is None or t is bool:
            continue
        if t is float:
            if not -_BIG < v < _BIG:
                return True
        elif (t is dict or t is list) and _big_float(v):
            return True
    return False


def _no_constant(name: str):
    raise _NonFinite(name)  # NaN, Infinity, -Infinity: Python's json takes them, JSON (and pyarrow) do not


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


def _parquet_rows(source) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq  # no torch; only loaded for parquet files

    try:
        pf = pq.ParquetFile(source)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise DatasetProblem(f"is not a readable Parquet file ({type(exc).__name__})") from None
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
              label_field: str | None = None, max_labels: int | None = None) -> ScanResult:
    """Run `check` on every row (it raises DatasetProblem), counting rows and label values (at most
    `max_labels` distinct ones)."""
    result = ScanResult()
    for row_no, row in rows:
        if row_no > max_rows:
            raise DatasetProblem(f"has more than the {max_rows} rows this server accepts")
        if row_no == 1:
            result.columns = set(row)
        check(row_no, row)
        if label_field is not None:
            value = row.get(label_field)
            if value not in result.label_values and max_labels is not None \
                    and len(result.label_values) >= max_labels:
                raise DatasetProblem(f"row {row_no}: has more than {max_labels} distinct labels")
            result.label_values[value] = result.label_values.get(value, 0) + 1
        result.num_rows = row_no
    if result.num_rows == 0:
        raise DatasetProblem("has no rows")
    return result



def _rows_of(plan: DatasetPlan, settings: Settings):
    if plan.kind == "inline":
        return enumerate(plan.rows, start=1)
    return iter_file_rows(Path(plan.path), plan.format, max_bytes=settings.max_dataset_bytes)


def scan_dataset(plan: DatasetPlan | None, field: str, settings: Settings, v: Violations,
                 check: RowCheck, label_field: str | None = None) -> ScanResult | None:
    """Run `check` on every row of a planned dataset (file or inline); a problem is added to `v` under
    `field`. Hub data is checked by the worker once downloaded, so it is skipped here."""
    from tunewire_server.validation.common import MAX_LABELS

    if plan is None or plan.kind == "hub":
        return None
    try:
        return scan_rows(_rows_of(plan, settings), max_rows=settings.max_dataset_rows, check=check,
                         label_field=label_field, max_labels=MAX_LABELS if label_field else None)
    except DatasetProblem as exc:
        v.add(field, str(exc))
    except UnsafePath as exc:  # swapped for a FIFO or a device since it was checked, or grown too large
        v.add(field, str(exc))
    except OSError as exc:
        v.add(field, f"cannot be read: {exc.strerror or type(exc).__name__}")
    return None


def require_text(row_no: int, row: dict, column: str) -> str:
    if column not in row:
        raise DatasetProblem(f"row {row_no}: column {preview(column)} is missing (columns: {columns_of(row)})")
    value = row[column]
    if not isinstance(value, str):
        raise DatasetProblem(f"row {row_no}: column {preview(column)} must be text, got {type(value).__name__}")
    if not value.strip():
        raise DatasetProblem(f"row {row_no}: column {preview(column)} is empty")
    return value


def columns_of(row: dict, most: int = 8) -> str:
    """A row's column names for a message: the first `most`, each cut short."""
    names = sorted(map(str, row))
    shown = ", ".join(n if len(n) <= 30 and n.isprintable() else preview(n, 30) for n in names[:most])
    return shown + (f", ... ({len(names)} columns)" if len(names) > most else "")


def class_index(value, n: int, row_no: int | None = None, column: str = "label") -> int:
    """A numeric label as a class index in [0, n); DatasetProblem naming the row and column otherwise."""
    what = (f"row {row_no}: " if row_no is not None else "") + f"column {preview(column)}: label"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DatasetProblem(f"{what} must be a name or a class index, got {type(value).__name__}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DatasetProblem(f"{what} must be a class index, got {value}")
        if not value.is_integer():
            raise DatasetProblem(f"{what} {preview(value)} is not a class index (a whole number from 0)")
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()):
            raise DatasetProblem(f"{what} {preview(value)} is not a class index")
        if len(value.lstrip("0")) > len(str(n)):  # int() of a long digit string is slow
            raise DatasetProblem(f"{what} {preview(value)} is out of range for {n} labels")
    index = int(value)
    if index < 0:
        raise DatasetProblem(f"{what} {preview(value)} is negative; class indices start at 0")
    if index >= n:
        raise DatasetProblem(f"{what} {preview(value)} is out of range for {n} labels")
    return index


def label_index(value, names: list[str]) -> int:
    """The class index of a label value: a name in `names`, or an index (int or digit string) below
    len(names). DatasetProblem (quoting at most a prefix of the value) for anything else."""
    if isinstance(value, str):
        if value in names:
            return names.index(value)
        if not (value.isascii() and value.isdigit()):
            raise DatasetProblem(f"label {preview(value)} is not one of the {len(names)} label names")
    return class_index(value, len(names))
