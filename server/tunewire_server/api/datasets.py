"""Protobuf <-> the datasets package: upload headers in, uploaded datasets and their reports out."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from tunewire.v1 import dataset_pb2, job_pb2
from tunewire_server.datasets.report import NOT_UTF8, Report
from tunewire_server.datasets.uploads import Uploads
from tunewire_server.errors import FieldViolation, InvalidSpec
from tunewire_server.store import DatasetRecord, UploadRecord
from tunewire_server.validation.common import FILE_FORMATS

FORMAT_VALUES = {name: value for value, name in FILE_FORMATS.items()}
PROBLEM_KINDS = {NOT_UTF8: dataset_pb2.ROW_PROBLEM_KIND_NOT_UTF8}


def header_from_proto(header: dataset_pb2.UploadHeader, uploads: Uploads) -> UploadRecord:
    """The declared upload, checked (InvalidSpec naming the header field at fault)."""
    if header.format != job_pb2.FILE_FORMAT_UNSPECIFIED and header.format not in FILE_FORMATS:
        raise InvalidSpec(FieldViolation("header.format", f"unknown format {header.format}; use JSONL, CSV, TSV "
                                                          "or PARQUET, or leave it unset to infer it from the name"))
    return uploads.check_header(header.upload_id, header.name, FILE_FORMATS.get(header.format), header.size_bytes,
                                header.sha256, header.label_column)


def report_to_proto(report: Report) -> dataset_pb2.DatasetReport:
    return dataset_pb2.DatasetReport(
        num_rows=report.num_rows,
        columns=[dataset_pb2.ColumnSummary(name=c.name, type=c.type, missing=c.missing) for c in report.columns],
        problem_rows=[dataset_pb2.RowProblem(row=p.row, column=p.column, kind=PROBLEM_KINDS.get(
            p.kind, dataset_pb2.ROW_PROBLEM_KIND_EMPTY)) for p in report.problem_rows],
        problem_row_count=report.problem_row_count,
        label_column=report.label_column,
        label_counts=[dataset_pb2.LabelCount(value=c.value, count=c.count, missing=c.missing)
                      for c in report.label_counts],
        columns_truncated=report.columns_truncated,
        labels_truncated=report.labels_truncated,
    )


def dataset_to_proto(record: DatasetRecord, report: Report | None = None) -> dataset_pb2.UploadedDataset:
    created = Timestamp()
    created.FromNanoseconds(int(record.created_at * 1e9))
    return dataset_pb2.UploadedDataset(
        id=record.id, name=record.name, format=FORMAT_VALUES[record.format], size_bytes=record.size,
        sha256=record.sha256, create_time=created,
        report=report_to_proto(report if report is not None else Report.from_json(record.report_json)))
