"""tunewire_server.api.datasets: upload headers from the wire (checked field by field) and stored datasets
with their reports onto it."""

from __future__ import annotations

import hashlib

import pytest

from tunewire.v1 import dataset_pb2, job_pb2
from tunewire_server.api import datasets as convert
from tunewire_server.config import Settings
from tunewire_server.datasets.report import Column, LabelCount, Report, RowProblem
from tunewire_server.datasets.uploads import Uploads
from tunewire_server.errors import InvalidSpec
from tunewire_server.store import DatasetRecord, SQLiteStore


@pytest.fixture
def uploads(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    store = SQLiteStore(settings.db_path)
    yield Uploads(settings, store)
    store.close()


def test_a_header_takes_its_format_from_the_enum_or_the_name(uploads):
    sha = hashlib.sha256(b"x").hexdigest().upper()
    head = dataset_pb2.UploadHeader(upload_id="u", name="d.csv", size_bytes=1, sha256=sha, label_column="y")
    record = convert.header_from_proto(head, uploads)
    assert (record.upload_id, record.name, record.format, record.size, record.sha256, record.label_column) == \
        ("u", "d.csv", "csv", 1, sha.lower(), "y")
    head.format = job_pb2.FILE_FORMAT_PARQUET
    assert convert.header_from_proto(head, uploads).format == "parquet"
    head.format = 42
    with pytest.raises(InvalidSpec) as info:
        convert.header_from_proto(head, uploads)
    assert info.value.violations[0].field == "header.format"


def test_a_stored_dataset_and_its_report_go_on_the_wire():
    report = Report(num_rows=3, columns=[Column("text", "string", 1)],
                    problem_rows=[RowProblem(2, "EMPTY"), RowProblem(3, "NOT_UTF8", "text")], problem_row_count=2,
                    label_column="label", label_counts=[LabelCount("a", 2), LabelCount("", 1, True)])
    record = DatasetRecord("ds-" + "a" * 64, 1, "d.tsv", "tsv", 12, "a" * 64, 1700000000.5, "x.tsv", report.to_json())
    msg = convert.dataset_to_proto(record)
    assert (msg.id, msg.name, msg.format, msg.size_bytes, msg.sha256) == \
        (record.id, "d.tsv", job_pb2.FILE_FORMAT_TSV, 12, "a" * 64)
    assert msg.create_time.ToNanoseconds() == 1700000000_500000000
    assert [(p.row, p.kind, p.column) for p in msg.report.problem_rows] == [
        (2, dataset_pb2.ROW_PROBLEM_KIND_EMPTY, ""), (3, dataset_pb2.ROW_PROBLEM_KIND_NOT_UTF8, "text")]
    assert [(c.value, c.count, c.missing) for c in msg.report.label_counts] == [("a", 2, False), ("", 1, True)]
    assert (msg.report.num_rows, msg.report.columns[0].missing, msg.report.label_column) == (3, 1, "label")
