"""The validation report of an uploaded file, built in one streaming pass: the file parses in its format
(the readers of validation/dataset_scan.py, so rows are numbered as a job's checks number them), rows
are counted, columns and their types listed, empty and non-UTF-8 rows reported by row number, and the
values of one column counted on request. Memory is bounded whatever the file's size.

Text that is not UTF-8 does not stop the pass: it is read with `surrogateescape` (each bad byte becomes
a lone surrogate) and the row is reported. A file that does not parse at all raises DatasetProblem.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from tunewire_server.validation import dataset_scan
from tunewire_server.validation.dataset_scan import DatasetProblem
from tunewire_server.validation.paths import open_regular

__all__ = ["DatasetProblem", "Report", "ReportBuilder", "build_report", "report_of"]

MAX_COLUMNS = 256  # columns listed
MAX_PROBLEM_ROWS = 100  # problem rows listed (all are counted)
MAX_LABELS = 1000  # distinct label values counted
MAX_TEXT = 256  # characters of a column name or label value kept
EMPTY, NOT_UTF8 = "EMPTY", "NOT_UTF8"
_ESCAPED = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte that is not UTF-8


@dataclass
class Column:
    name: str
    type: str
    missing: int


@dataclass
class RowProblem:
    row: int
    kind: str  # EMPTY | NOT_UTF8
    column: str = ""


@dataclass
class LabelCount:
    value: str
    count: int
    missing: bool = False


@dataclass
class Report:
    num_rows: int = 0
    columns: list[Column] = field(default_factory=list)
    problem_rows: list[RowProblem] = field(default_factory=list)
    problem_row_count: int = 0
    label_column: str = ""
    label_counts: list[LabelCount] = field(default_factory=list)
    columns_truncated: bool = False
    labels_truncated: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Report:
        data = json.loads(text)
        return cls(num_rows=data["num_rows"], columns=[Column(**c) for c in data["columns"]],
                   problem_rows=[RowProblem(**p) for p in data["problem_rows"]],
                   problem_row_count=data["problem_row_count"], label_column=data["label_column"],
                   label_counts=[LabelCount(**c) for c in data["label_counts"]],
                   columns_truncated=data["columns_truncated"], labels_truncated=data["labels_truncated"])


def clean(text: str, limit: int = MAX_TEXT) -> str:
    """`text` as valid UTF-8 (a bad byte becomes '?'), cut to `limit` characters."""
    return text.encode("utf-8", "replace").decode("utf-8")[:limit]


def _type_name(value) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__  # parquet: datetime, bytes, Decimal...


def _merged(types: set[str]) -> str:
    if not types:
        return "null"
    if types == {"integer", "number"}:
        return "number"
    return next(iter(types)) if len(types) == 1 else "mixed"


def _not_utf8(value) -> bool:
    if isinstance(value, str):
        return _ESCAPED.search(value) is not None
    if isinstance(value, (list, tuple)):
        return any(_not_utf8(v) for v in value)
    if isinstance(value, dict):
        return any(_not_utf8(k) or _not_utf8(v) for k, v in value.items())
    return False


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _label_text(value) -> str:
    return clean(value) if isinstance(value, str) else clean(json.dumps(value, sort_keys=True, default=str))


def rows(path: Path, fmt: str) -> Iterator[tuple[int, dict]]:
    """The rows of a stored or partial file, numbered as dataset_scan numbers them; text that is not
    UTF-8 comes through with its bad bytes as lone surrogates."""
    fd = open_regular(path)
    with open(fd, "rb") as raw:
        yield from rows_of(raw, fmt)


def rows_of(raw: BinaryIO, fmt: str) -> Iterator[tuple[int, dict]]:
    """The rows of an open binary stream (read from its start to its end), as `rows` reads a file."""
    if fmt == "parquet":
        yield from dataset_scan._parquet_rows(raw)
        return
    if fmt == "jsonl":
        yield from dataset_scan.jsonl_rows_escaped(raw)
        return
    text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
    if fmt in ("csv", "tsv"):
        yield from dataset_scan._csv_rows(text, "\t" if fmt == "tsv" else ",")
    else:
        raise DatasetProblem(f"{fmt!r} is not a format this server reads")


def build_report(path: Path, fmt: str, label_column: str = "") -> Report:
    """Read every row of the file at `path` in format `fmt` and report on it. DatasetProblem (naming the
    row) when the file does not parse in that format, or has no rows."""
    return report_of(rows(path, fmt), label_column)


def report_of(numbered_rows: Iterable[tuple[int, dict]], label_column: str = "") -> Report:
    """The report on rows as the readers number them (see build_report)."""
    builder = ReportBuilder(label_column)
    for row_no, row in numbered_rows:
        builder.add(row_no, row)
    return builder.result()


_TYPE_NAMES = {str: "string", bool: "boolean", int: "integer", float: "number", list: "list", tuple: "list",
               dict: "object"}  # _type_name of these exact types, looked up (the common case)


class ReportBuilder:
    """A report built one row at a time (rows in order, numbered as the readers number them): what
    build_report returns for the same rows."""

    def __init__(self, label_column: str = "") -> None:
        self.label_column = label_column
        self.report = Report(label_column=clean(label_column))
        self.types: dict[str, set[str]] = {}
        self.present: dict[str, int] = {}
        self.labels: dict[str, int] = {}
        self.missing_labels = 0
        self._texts: dict[str, str] = {}  # label value -> its text in the report

    def add(self, row_no: int, row: dict) -> None:
        # The hot loop of an upload's check (a million rows a GiB): the common cases (ASCII text, numbers)
        # are decided inline; anything else goes through the same helpers as ever.
        report, types, present = self.report, self.types, self.present
        report.num_rows = row_no
        bad = None  # the first column whose name or value holds a byte that is not UTF-8
        blank = True
        for key, value in row.items():
            kind = type(value)
            if bad is None and (
                    (not (type(key) is str and key.isascii()) and _may_hold_bad_text(key) and _not_utf8(key))
                    or (not (kind is str and value.isascii()) and kind not in _NO_TEXT
                        and _may_hold_bad_text(value) and _not_utf8(value))):
                bad = key
            if blank:
                if kind is str:
                    if value.strip():
                        blank = False
                elif not _blank(value):
                    blank = False
            name = key if type(key) is str else str(key)
            seen = types.get(name)
            if seen is None:
                if len(types) >= MAX_COLUMNS:
                    report.columns_truncated = True
                    continue
                seen = types[name] = set()
                present[name] = 0
            if value is not None:
                seen.add(_TYPE_NAMES.get(kind) or _type_name(value))
                present[name] += 1
        if bad is not None or blank:
            report.problem_row_count += 1
            if len(report.problem_rows) < MAX_PROBLEM_ROWS:
                report.problem_rows.append(RowProblem(row_no, NOT_UTF8, clean(str(bad))) if bad is not None
                                           else RowProblem(row_no, EMPTY))
        if self.label_column:
            self._count_label(row.get(self.label_column))

    def _count_label(self, value) -> None:
        if value is None:
            self.missing_labels += 1
            return
        if type(value) is str:  # the text of a label value, remembered (most columns repeat a few values)
            text = self._texts.get(value)
            if text is None:
                text = _label_text(value)
                if len(self._texts) < MAX_LABELS:
                    self._texts[value] = text
        else:
            text = _label_text(value)
        labels = self.labels
        if text in labels or len(labels) < MAX_LABELS:
            labels[text] = labels.get(text, 0) + 1
        else:
            self.report.labels_truncated = True

    def result(self) -> Report:
        """The report on the rows added; DatasetProblem when there were none."""
        report = self.report
        if report.num_rows == 0:
            raise DatasetProblem("has no rows")
        report.columns = [Column(clean(name), _merged(t), report.num_rows - self.present[name])
                          for name, t in self.types.items()]
        counts = [LabelCount(value, count) for value, count in self.labels.items()]
        if self.missing_labels:
            counts.append(LabelCount("", self.missing_labels, missing=True))
        report.label_counts = sorted(counts, key=lambda c: (-c.count, c.missing, c.value))
        return report


_PLAIN = (int, float, type(None))  # values that hold no text (bool is an int)
_NO_TEXT = frozenset((int, float, bool, type(None)))  # the same, as exact types


def _may_hold_bad_text(value) -> bool:
    """False for what cannot hold an escaped byte (ASCII text, numbers, null): the common case, cheaply."""
    return not value.isascii() if isinstance(value, str) else not isinstance(value, _PLAIN)
