"""A faster way to the same JSONL report: pyarrow's JSON reader (C++) parses blocks of whole lines, and the
report (rows, columns in first-seen order, per-column type names, missing values, empty rows by row
number, label counts) is built from its columns instead of from one Python dict a row.

It is only ever a shortcut: a block is taken only when pyarrow's reading of it is known to be the one the
Python readers (validation/dataset_scan.py, report.py) would make, and otherwise FastPathUnavailable is
raised and the caller builds the report the slow way from the first byte, so every problem (a row that
does not parse, a row that is not UTF-8, NaN, a duplicate key...) is reported exactly as before, by row
number. What makes a block fall back (each cheap to tell, rare in real data):

- anything pyarrow refuses (invalid JSON, a column whose type changes, duplicate keys, a lone surrogate);
- bytes that are not UTF-8, a byte-order mark, a \\r that is not part of \\r\\n;
- a line count that is not the row count (pyarrow takes two objects on one line; Python does not);
- a number Python reads otherwise: NaN/Infinity/Inf (pyarrow takes them), an integer past 64 bits
  (pyarrow makes it a float), a float column value as large as such an integer;
- nesting deeper than MAX_DEPTH (Python's json gives up near 1000 levels), a type with no exact name,
  more than MAX_COLUMNS columns or MAX_LABELS label values (where the Python report truncates), a label
  column holding floats, timestamps (pyarrow turns date-like strings into them) or nested values.

Empty rows: a row is a candidate when each of its values is null or a string of whitespace only (as
str.isspace has it); candidates are rare and are checked with report.py's own test on their values.
"""

from __future__ import annotations

import sys
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from tunewire_server.datasets.report import (
    EMPTY,
    MAX_COLUMNS,
    MAX_LABELS,
    MAX_PROBLEM_ROWS,
    Report,
    ReportBuilder,
    RowProblem,
    _blank,
    _label_text,
)

BLOCK = 4 * 1024 * 1024  # bytes of whole lines handed to pyarrow at once (the check's memory is about 16x)
MAX_PENDING = 32 * 1024 * 1024  # a line longer than this: the slow path (it knows the line limit)
MAX_DEPTH = 100
BIG = 9.2e18  # just under 2**63: a float this large may be an integer pyarrow could not hold as int64
BOM = b"\xef\xbb\xbf"
_OPEN = ord("{")
# Every character str.isspace() takes, as one RE2 class: a string of these only is "blank" in report.py.
_SPACE_CLASS = "".join(f"\\x{{{c:x}}}" for c in range(sys.maxunicode + 1) if chr(c).isspace())
_BLANK_STRING = f"^[{_SPACE_CLASS}]*$"


class FastPathUnavailable(Exception):
    """This file (or block) must be read the slow way; the message says why (for logs and tests)."""


def _type_name(t: pa.DataType) -> str | None:
    """report.py's name for values of this pyarrow type (None: not a type the fast path names)."""
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_temporal(t):
        return "string"  # a temporal type is a date-like string pyarrow parsed: JSON has no dates
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return "list"
    if pa.types.is_struct(t):
        return "object"
    return None


def _depth_and_floats(t: pa.DataType) -> tuple[int, bool]:
    """How deep a type nests (1 for a scalar) and whether a float is anywhere inside it (iteratively: a
    pathological type must not exhaust the stack here)."""
    deepest, floats, todo = 0, False, [(t, 1)]
    while todo:
        t, depth = todo.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        floats = floats or pa.types.is_floating(t)
        todo += [(t.field(i).type, depth + 1) for i in range(t.num_fields)]
    return deepest, floats


class FastJsonlReport:
    """The report of a JSONL file fed as blocks of whole lines (see the module docstring)."""

    def __init__(self, label_column: str = "") -> None:
        self.builder = ReportBuilder(label_column)  # holds the state; its result() formats the report
        self.label_column = label_column
        self.first = True

    def add_block(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        """Take data[start:end], whole lines (the file's last block may end without a newline); nothing
        is copied."""
        end = len(data) if end is None else end
        if end <= start:
            return
        first, self.first = self.first, False
        if first and data.startswith(BOM, start):
            raise FastPathUnavailable("a byte-order mark")
        if data.find(b"\r", start, end) >= 0 and data.count(b"\r", start, end) != data.count(b"\r\n", start, end):
            raise FastPathUnavailable("a \\r that ends a line on its own")
        arr = np.frombuffer(data, dtype=np.uint8, count=end - start, offset=start)
        view = memoryview(data)[start:end]
        if arr.max() >= 0x80:
            try:
                str(view, "utf-8")
            except UnicodeDecodeError:
                raise FastPathUnavailable("bytes that are not UTF-8") from None
        lines = self._nonblank_lines(data, start, arr)
        try:
            table = pj.read_json(pa.BufferReader(pa.py_buffer(view)),
                                 read_options=pj.ReadOptions(use_threads=False, block_size=end - start + 1))
        except (pa.ArrowException, ValueError) as exc:
            raise FastPathUnavailable(f"pyarrow: {str(exc)[:120]}") from None
        if table.num_rows != lines:
            raise FastPathUnavailable(f"{table.num_rows} objects on {lines} lines")
        self._add_table(table, data, start, end)

    @staticmethod
    def _nonblank_lines(data: bytes, start: int, arr: np.ndarray) -> int:
        """The lines of the block (`arr`, at `start` in `data`) that hold more than JSON whitespace: the rows
        the Python reader counts, when every line parses."""
        starts = np.flatnonzero(arr == 10) + 1
        starts = np.concatenate(([0], starts[starts < len(arr)]))
        odd = starts[arr[starts] != _OPEN]  # lines that do not start with "{": blank, indented or refused
        blank = 0
        for at in (start + int(i) for i in odd):
            stop = data.find(b"\n", at, start + len(arr))
            if not data[at:start + len(arr) if stop < 0 else stop].strip(b" \t\r"):
                blank += 1
        return len(starts) - blank

    def _add_table(self, table: pa.Table, data: bytes, start: int, end: int) -> None:
        b = self.builder
        report, types, present = b.report, b.types, b.present
        base, n = report.num_rows, table.num_rows
        candidates = None  # rows whose values are all null or whitespace strings: a boolean mask (None: all)
        none_blank = False  # a column holds a value in every row that is never blank: no row is empty
        nested_floats = False
        for name, column in zip(table.column_names, table.columns, strict=True):
            column = column.combine_chunks()
            t = column.type
            kind = _type_name(t)
            if kind is None:
                raise FastPathUnavailable(f"column type {t}")
            depth, floats = _depth_and_floats(t)
            if depth > MAX_DEPTH:
                raise FastPathUnavailable("nesting deeper than the fast path reads")
            nested_floats = nested_floats or (floats and kind in ("list", "object"))
            nulls = column.null_count
            if kind == "number":
                lo, hi = (v.as_py() for v in pc.min_max(column).values())
                if (lo is not None and not -BIG < lo < BIG) or (hi is not None and not -BIG < hi < BIG):
                    raise FastPathUnavailable("a float as large as an integer past 64 bits (or NaN/Infinity)")
                if pc.any(pc.is_nan(column)).as_py():
                    raise FastPathUnavailable("NaN")
            if name not in types:
                if len(types) >= MAX_COLUMNS:
                    raise FastPathUnavailable("more columns than the report lists")
                types[name], present[name] = set(), 0
            if n - nulls:
                types[name].add(kind)
                present[name] += n - nulls
            if kind == "null" or none_blank:
                continue
            if pa.types.is_string(t) or pa.types.is_large_string(t):
                # null only where the value is, and there or_kleene(True, null) is True: never null
                maybe_blank = pc.or_kleene(pc.is_null(column), pc.match_substring_regex(column, _BLANK_STRING))
            elif nulls:
                maybe_blank = pc.is_null(column)
            else:
                none_blank = True
                continue
            candidates = maybe_blank if candidates is None else pc.and_(candidates, maybe_blank)
        if nested_floats and (data.find(b"NaN", start, end) >= 0 or data.find(b"Inf", start, end) >= 0):
            raise FastPathUnavailable("NaN or Infinity inside a nested value")
        self._count_labels(table)
        # No pa.array / to_numpy / fill_null with Python values here: those import pandas into the process.
        if none_blank:
            rows, values = [], []
        elif candidates is None:
            rows, values = list(range(n)), table.to_pylist()
        else:
            indices = pc.indices_nonzero(candidates)
            rows, values = indices.to_pylist(), table.take(indices).to_pylist()
        for index, row in zip(rows, values, strict=True):
            if all(_blank(v) for v in row.values()):
                report.problem_row_count += 1
                if len(report.problem_rows) < MAX_PROBLEM_ROWS:
                    report.problem_rows.append(RowProblem(base + index + 1, EMPTY))
        report.num_rows = base + n

    def _count_labels(self, table: pa.Table) -> None:
        b = self.builder
        if not self.label_column:
            return
        if self.label_column not in table.column_names:
            b.missing_labels += table.num_rows
            return
        column = table.column(self.label_column)
        t = column.type
        if not (pa.types.is_null(t) or pa.types.is_boolean(t) or pa.types.is_integer(t)
                or pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise FastPathUnavailable(f"a label column of type {t}")
        b.missing_labels += column.null_count
        if pa.types.is_null(t):
            return
        counts = pc.value_counts(column.drop_null())
        values, numbers = counts.field("values").to_pylist(), counts.field("counts").to_pylist()
        for value, count in zip(values, numbers, strict=True):
            text = _label_text(value)
            b.labels[text] = b.labels.get(text, 0) + count
        if len(b.labels) > MAX_LABELS:
            raise FastPathUnavailable("more label values than the report counts")

    def result(self) -> Report:
        """The report; FastPathUnavailable for a file with no rows (the slow path words that problem)."""
        if self.builder.report.num_rows == 0:
            raise FastPathUnavailable("no rows")
        return self.builder.result()


def fast_jsonl_report(reader: BinaryIO, label_column: str = "", block: int = BLOCK) -> Report:
    """The report of the JSONL stream `reader` (read to its end) the fast way; FastPathUnavailable when
    it must be built the slow way (report.build_report / report_of), from the first byte."""
    fast = FastJsonlReport(label_column)
    pending = b""  # the start of a line that the next read ends
    while True:
        data = reader.read(block)
        if not data:
            fast.add_block(pending)
            return fast.result()
        head = data.find(b"\n") + 1
        if head == 0:
            pending += data
            if len(pending) > MAX_PENDING:
                raise FastPathUnavailable("a line longer than the fast path reads")
            continue
        start = 0
        if pending:  # that line alone (a small block), so the rest of `data` is read where it lies
            fast.add_block(pending + data[:head])
            start = head
        cut = data.rfind(b"\n") + 1
        fast.add_block(data, start, cut)
        pending = data[cut:]
