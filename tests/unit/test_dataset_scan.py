"""validation/dataset_scan.py: the control plane's readers of dataset files (JSONL, CSV/TSV, Parquet) and
the row scan every task runs before a job is queued. Messages name the 1-based data row."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunewire_server.config import Settings
from tunewire_server.errors import InvalidSpec
from tunewire_server.validation import dataset_scan as ds
from tunewire_server.validation.common import DatasetPlan, Violations
from tunewire_server.validation.dataset_scan import DatasetProblem
from tunewire_server.validation.paths import FileTooLarge, NotRegularFile


def rows(path: Path, fmt: str, **kw) -> list[tuple[int, dict]]:
    return list(ds.iter_file_rows(path, fmt, **kw))


def test_the_format_comes_from_the_declaration_or_the_suffix():
    assert ds.format_for(Path("a.JSONL"), None) == "jsonl"
    assert ds.format_for(Path("a.json"), None) == "jsonl"
    assert ds.format_for(Path("a.tsv"), None) == "tsv"
    assert ds.format_for(Path("a.txt"), "csv") == "csv"
    with pytest.raises(DatasetProblem, match="cannot tell the format of 'a.txt'"):
        ds.format_for(Path("a.txt"), None)


def test_jsonl_rows_are_numbered_skipping_blank_lines(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"a": 1}\n\n  \n{"a": 2}\n')
    assert rows(tmp_path / "d.jsonl", "jsonl") == [(1, {"a": 1}), (2, {"a": 2})]


@pytest.mark.parametrize("text,message", [
    ('{"a": 1}\n\n{"a": \n', r"row 2 \(line 3\): not valid JSON"),
    ('{"a": NaN}\n', r"row 1 \(line 1\): NaN is not valid JSON"),
    ('{"a": -Infinity}\n', "-Infinity is not valid JSON"),
    ('[1, 2]\n', "row 1 \\(line 1\\): must be a JSON object, got list"),
    ("[" * 100_000 + "\n", "nests too deeply"),
])
def test_bad_jsonl_rows_are_named(tmp_path, text, message):
    (tmp_path / "d.jsonl").write_text(text)
    with pytest.raises(DatasetProblem, match=message):
        rows(tmp_path / "d.jsonl", "jsonl")


def test_text_that_is_not_utf8_is_refused(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(b'{"a": "ok"}\n{"a": "\xff"}\n')
    with pytest.raises(DatasetProblem, match="not UTF-8"):
        rows(tmp_path / "d.jsonl", "jsonl")


def test_csv_and_tsv_rows_are_dicts_by_header(tmp_path):
    (tmp_path / "d.csv").write_text('text,label\n"a, quoted",1\n\nb,0\n')
    (tmp_path / "d.tsv").write_text("text\tlabel\na,b\t1\n")
    assert rows(tmp_path / "d.csv", "csv") == [(1, {"text": "a, quoted", "label": "1"}),
                                               (2, {"text": "b", "label": "0"})]
    assert rows(tmp_path / "d.tsv", "tsv") == [(1, {"text": "a,b", "label": "1"})]
    (tmp_path / "empty.csv").write_text("")
    assert rows(tmp_path / "empty.csv", "csv") == []


@pytest.mark.parametrize("text,message", [
    ("a,a\n1,2\n", "the header repeats a column name"),
    ("a,b\n1,2\n1,2,3\n", "row 2: has 3 fields, the header has 2"),
])
def test_bad_csv_is_named(tmp_path, text, message):
    (tmp_path / "d.csv").write_text(text)
    with pytest.raises(DatasetProblem, match=message):
        rows(tmp_path / "d.csv", "csv")


def test_parquet_rows_are_read_and_a_broken_file_named(tmp_path):
    pq.write_table(pa.table({"text": ["a", "b"], "label": [0, 1]}), tmp_path / "d.parquet")
    assert rows(tmp_path / "d.parquet", "parquet") == [(1, {"text": "a", "label": 0}), (2, {"text": "b", "label": 1})]
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DatasetProblem, match="is not a readable Parquet file"):
        rows(tmp_path / "bad.parquet", "parquet")


def test_a_file_over_max_bytes_or_not_regular_is_refused_before_reading(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"a": 1}\n')
    with pytest.raises(FileTooLarge, match="is 9 bytes; the limit is 8"):
        rows(tmp_path / "d.jsonl", "jsonl", max_bytes=8)
    os.mkfifo(tmp_path / "fifo.jsonl")
    with pytest.raises(NotRegularFile):
        rows(tmp_path / "fifo.jsonl", "jsonl")


def no_check(row_no, row):
    pass


def test_scan_rows_counts_rows_columns_and_labels():
    result = ds.scan_rows(enumerate([{"t": "a", "l": "x"}, {"t": "b", "l": "y"}, {"t": "c", "l": "x"}], 1),
                          max_rows=10, check=no_check, label_field="l")
    assert (result.num_rows, result.columns, result.label_values) == (3, {"t", "l"}, {"x": 2, "y": 1})


def test_scan_rows_stops_at_the_first_problem():
    seen = []

    def check(row_no, row):
        seen.append(row_no)
        if row_no == 2:
            raise DatasetProblem("row 2: bad")

    with pytest.raises(DatasetProblem, match="row 2: bad"):
        ds.scan_rows(enumerate([{}, {}, {}], 1), max_rows=10, check=check)
    assert seen == [1, 2]


@pytest.mark.parametrize("data,kw,message", [
    ([{}] * 3, {"max_rows": 2}, "has more than the 2 rows this server accepts"),
    ([{"l": 1}, {"l": 2}, {"l": 1}, {"l": 3}], {"max_rows": 9, "label_field": "l", "max_labels": 2},
     "row 4: has more than 2 distinct labels"),
    ([], {"max_rows": 9}, "has no rows"),
])
def test_scan_rows_limits(data, kw, message):
    with pytest.raises(DatasetProblem, match=message):
        ds.scan_rows(enumerate(data, 1), check=no_check, **kw)


def test_scan_dataset_adds_the_problem_under_the_field(tmp_path):
    settings = Settings(data_dir=tmp_path)
    v = Violations()
    inline = DatasetPlan(kind="inline", rows=[{"text": "a"}, {"text": ""}])
    check = lambda n, row: ds.require_text(n, row, "text")  # noqa: E731
    assert ds.scan_dataset(inline, "train_dataset", settings, v, check) is None
    with pytest.raises(InvalidSpec) as info:
        v.raise_if_any()
    assert [(f.field, f.description) for f in info.value.violations] == [
        ("train_dataset", "row 2: column 'text' is empty")]


def test_scan_dataset_reads_files_skips_the_hub_and_names_unreadable_files(tmp_path):
    settings = Settings(data_dir=tmp_path)
    (tmp_path / "d.jsonl").write_text('{"text": "a"}\n')
    v = Violations()
    result = ds.scan_dataset(DatasetPlan(kind="file", path=str(tmp_path / "d.jsonl"), format="jsonl"), "f",
                             settings, v, no_check)
    assert result.num_rows == 1
    assert ds.scan_dataset(DatasetPlan(kind="hub", name="org/data"), "f", settings, v, no_check) is None
    assert ds.scan_dataset(None, "f", settings, v, no_check) is None
    v.raise_if_any()  # nothing added so far
    ds.scan_dataset(DatasetPlan(kind="file", path=str(tmp_path / "gone.jsonl"), format="jsonl"), "eval_dataset",
                    settings, v, no_check)
    with pytest.raises(InvalidSpec) as info:
        v.raise_if_any()
    assert info.value.violations[0].field == "eval_dataset"
    assert "cannot be read: No such file or directory" in info.value.violations[0].description


@pytest.mark.parametrize("row,message", [
    ({"other": "x"}, r"row 3: column 'text' is missing \(columns: other\)"),
    ({"text": 5}, "row 3: column 'text' must be text, got int"),
    ({"text": " \n"}, "row 3: column 'text' is empty"),
])
def test_require_text(row, message):
    with pytest.raises(DatasetProblem, match=message):
        ds.require_text(3, row, "text")
    assert ds.require_text(3, {"text": "ok"}, "text") == "ok"


def test_columns_of_shows_a_few_short_names():
    assert ds.columns_of({"b": 1, "a": 2}) == "a, b"
    many = ds.columns_of({f"c{i:02}": i for i in range(20)})
    assert many.startswith("c00, c01") and many.endswith(", ... (20 columns)")
    assert "x" * 31 not in ds.columns_of({"x" * 1000: 1})


@pytest.mark.parametrize("value,index", [(0, 0), (2, 2), (1.0, 1), ("2", 2), ("002", 2)])
def test_class_index_accepts_whole_numbers_in_range(value, index):
    assert ds.class_index(value, 3) == index


@pytest.mark.parametrize("value,message", [
    (3, "out of range for 3 labels"),
    (-1, "negative"),
    (1.5, "not a class index"),
    (float("inf"), "must be a class index, got inf"),
    ("x", "not a class index"),
    ("9" * 1000, "out of range"),
    (True, "got bool"),
    (None, "got NoneType"),
])
def test_class_index_names_the_row_and_column_when_refusing(value, message):
    with pytest.raises(DatasetProblem, match=message) as info:
        ds.class_index(value, 3, row_no=7, column="y")
    assert str(info.value).startswith("row 7: column 'y': label")
    assert len(str(info.value)) < 200


# --- jsonl_rows_escaped: the byte reader the upload report uses, against the text reader it stands for ---

ESCAPED_CASES = [
    b'{"a": 1}\n{"a": "caf\xe9"}\r\n\r\n{"a": "x"}\r{"b": 2}',  # CRLF, a lone CR, no newline at the end
    b'{"a": "\xe2\x82\xac"}\n \t\n\xe2\x80\xa8\n{"a": null}\n',  # a 3-byte character; blank lines (ASCII, Unicode)
    b'{"a": 123456789012345678901234567890, "b": [-9223372036854775809, 1e400]}\n',  # json's int and inf
    b'{"a": 1}\n{"a": NaN}\n',
    b'{"a": 1}\n[1, 2]\n',
    b'{"a": 1}\n{"a": "cut',
    b'{"a": "\\ud800"}\n{"a": "x\ry"}\n',  # an escaped lone surrogate; a CR inside a string ends the line
    b'\xef\xbb\xbf{"a": 1}\n',  # a BOM is not JSON
    b'{"a": 1}\n' + b'{"long": "' + b"y" * 40 + b'"}\n',  # past MAX_LINE_CHARS (lowered below)
    b"",
]


def text_reader_rows(data: bytes):
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape", newline="")
    return _outcome(ds._jsonl_rows(text))


def _outcome(rows):
    out = []
    try:
        for row_no, row in rows:
            out.append((row_no, repr(row)))
    except DatasetProblem as exc:
        out.append(f"DatasetProblem: {exc}")
    return out


@pytest.mark.parametrize("data", ESCAPED_CASES)
@pytest.mark.parametrize("block", [1, 2, 3, 7, 1024])
def test_the_byte_reader_reads_what_the_text_reader_reads(monkeypatch, data, block):
    monkeypatch.setattr(ds, "READ_BLOCK", block)  # rows, CRLFs and characters split across reads
    monkeypatch.setattr(ds, "MAX_LINE_CHARS", 32)
    expected = text_reader_rows(data)
    assert _outcome(ds.jsonl_rows_escaped(io.BytesIO(data))) == expected


def test_the_byte_reader_refuses_an_endless_line_without_holding_it(monkeypatch):
    monkeypatch.setattr(ds, "READ_BLOCK", 4)
    monkeypatch.setattr(ds, "MAX_LINE_CHARS", 16)
    endless = io.BytesIO(b'{"a": 1}\n' + b"z" * 1000)
    with pytest.raises(DatasetProblem, match="line 2: is longer than 16 characters"):
        list(ds.jsonl_rows_escaped(endless))
    assert endless.tell() < 100  # it stopped soon after the line passed 4 x 16 bytes
