import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tunewire.v1 import job_pb2 as _job_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RowProblemKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROW_PROBLEM_KIND_UNSPECIFIED: _ClassVar[RowProblemKind]
    ROW_PROBLEM_KIND_EMPTY: _ClassVar[RowProblemKind]
    ROW_PROBLEM_KIND_NOT_UTF8: _ClassVar[RowProblemKind]
ROW_PROBLEM_KIND_UNSPECIFIED: RowProblemKind
ROW_PROBLEM_KIND_EMPTY: RowProblemKind
ROW_PROBLEM_KIND_NOT_UTF8: RowProblemKind

class UploadedDataset(_message.Message):
    __slots__ = ("id", "name", "format", "size_bytes", "sha256", "create_time", "report")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    format: _job_pb2.FileFormat
    size_bytes: int
    sha256: str
    create_time: _timestamp_pb2.Timestamp
    report: DatasetReport
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., format: _Optional[_Union[_job_pb2.FileFormat, str]] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., report: _Optional[_Union[DatasetReport, _Mapping]] = ...) -> None: ...

class DatasetReport(_message.Message):
    __slots__ = ("num_rows", "columns", "problem_rows", "problem_row_count", "label_column", "label_counts", "columns_truncated", "labels_truncated")
    NUM_ROWS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_ROWS_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    LABEL_COLUMN_FIELD_NUMBER: _ClassVar[int]
    LABEL_COUNTS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    LABELS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    num_rows: int
    columns: _containers.RepeatedCompositeFieldContainer[ColumnSummary]
    problem_rows: _containers.RepeatedCompositeFieldContainer[RowProblem]
    problem_row_count: int
    label_column: str
    label_counts: _containers.RepeatedCompositeFieldContainer[LabelCount]
    columns_truncated: bool
    labels_truncated: bool
    def __init__(self, num_rows: _Optional[int] = ..., columns: _Optional[_Iterable[_Union[ColumnSummary, _Mapping]]] = ..., problem_rows: _Optional[_Iterable[_Union[RowProblem, _Mapping]]] = ..., problem_row_count: _Optional[int] = ..., label_column: _Optional[str] = ..., label_counts: _Optional[_Iterable[_Union[LabelCount, _Mapping]]] = ..., columns_truncated: _Optional[bool] = ..., labels_truncated: _Optional[bool] = ...) -> None: ...

class ColumnSummary(_message.Message):
    __slots__ = ("name", "type", "missing")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    missing: int
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., missing: _Optional[int] = ...) -> None: ...

class RowProblem(_message.Message):
    __slots__ = ("row", "kind", "column")
    ROW_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    row: int
    kind: RowProblemKind
    column: str
    def __init__(self, row: _Optional[int] = ..., kind: _Optional[_Union[RowProblemKind, str]] = ..., column: _Optional[str] = ...) -> None: ...

class LabelCount(_message.Message):
    __slots__ = ("value", "count", "missing")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    value: str
    count: int
    missing: bool
    def __init__(self, value: _Optional[str] = ..., count: _Optional[int] = ..., missing: _Optional[bool] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("upload_id", "name", "format", "size_bytes", "sha256", "label_column")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    LABEL_COLUMN_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    name: str
    format: _job_pb2.FileFormat
    size_bytes: int
    sha256: str
    label_column: str
    def __init__(self, upload_id: _Optional[str] = ..., name: _Optional[str] = ..., format: _Optional[_Union[_job_pb2.FileFormat, str]] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., label_column: _Optional[str] = ...) -> None: ...

class UploadChunk(_message.Message):
    __slots__ = ("offset", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...
