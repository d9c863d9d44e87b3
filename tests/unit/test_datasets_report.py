"""tunewire_server.datasets.report: one streaming pass over real files in each format."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunewire_server.datasets import report as report_module
from tunewire_server.datasets.report import DatasetProblem, Report, build_report


def test_csv_rows_columns_and_problems(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\r\ngood,pos\r\n,\r\n\"caf\xe9\",neg\r\n\r\nok,pos\r\n")
    report = build_report(path, "csv", "label")
    assert report.num_rows == 4  # the blank record is not a row
    assert [(c.name, c.type, c.missing) for c in report.columns] == [("text", "string", 0), ("label", "string", 0)]
    assert [(p.row, p.kind, p.column) for p in report.problem_rows] == [(2, "EMPTY", ""), (3, "NOT_UTF8", "text")]
    assert [(c.value, c.count) for c in report.label_counts] == [("pos", 2), ("", 1), ("neg", 1)]


def test_tsv_is_split_on_tabs(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("a\tb\n1\t2\n")
    assert [c.name for c in build_report(path, "tsv").columns] == ["a", "b"]


def test_parquet_types_and_missing_values(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["a", None, "c"], "n": [1, 2, 3], "x": [1.5, None, 2.0],
                             "tags": [["a"], [], None], "flag": [True, False, True]}), path)
    report = build_report(path, "parquet", "flag")
    assert [(c.name, c.type, c.missing) for c in report.columns] == [
        ("text", "string", 1), ("n", "integer", 0), ("x", "number", 1), ("tags", "list", 1), ("flag", "boolean", 0)]
    assert [(c.value, c.count) for c in report.label_counts] == [("true", 2), ("false", 1)]
    assert report.problem_row_count == 0


def test_jsonl_mixed_types_and_rows_that_differ_in_columns(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1, "b": "x"}\n{"a": "two", "c": {"k": 1}}\n{}\n')
    report = build_report(path, "jsonl")
    assert [(c.name, c.type, c.missing) for c in report.columns] == \
        [("a", "mixed", 1), ("b", "string", 2), ("c", "object", 2)]
    assert [(p.row, p.kind) for p in report.problem_rows] == [(3, "EMPTY")]


def test_problem_rows_are_listed_up_to_a_bound_and_all_counted(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": ""}\n' * (report_module.MAX_PROBLEM_ROWS + 5))
    report = build_report(path, "jsonl")
    assert len(report.problem_rows) == report_module.MAX_PROBLEM_ROWS
    assert report.problem_row_count == report_module.MAX_PROBLEM_ROWS + 5


def test_distinct_labels_past_the_bound_are_not_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(report_module, "MAX_LABELS", 2)
    path = tmp_path / "d.jsonl"
    path.write_text("".join(f'{{"label": {i % 3}}}\n' for i in range(9)))
    report = build_report(path, "jsonl", "label")
    assert report.labels_truncated and [(c.value, c.count) for c in report.label_counts] == [("0", 3), ("1", 3)]


@pytest.mark.parametrize("fmt, content, words", [
    ("jsonl", b'{"a": 1}\n[1, 2]\n', "row 2"),
    ("jsonl", b"", "no rows"),
    ("csv", b"a,b\n1,2,3\n", "row 1"),
    ("parquet", b"not parquet", "Parquet"),
])
def test_a_file_that_does_not_parse_names_the_row(tmp_path, fmt, content, words):
    path = tmp_path / f"d.{fmt}"
    path.write_bytes(content)
    with pytest.raises(DatasetProblem, match=words):
        build_report(path, fmt)


def test_a_report_survives_its_json(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"t\xff": "\xfe", "label": "a"}\n')
    report = build_report(path, "jsonl", "label")
    again = Report.from_json(report.to_json())
    assert again == report and again.columns[0].name == "t?"  # names go on the wire as valid UTF-8
