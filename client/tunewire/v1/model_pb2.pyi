import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelForm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_FORM_UNSPECIFIED: _ClassVar[ModelForm]
    MODEL_FORM_AS_TRAINED: _ClassVar[ModelForm]
    MODEL_FORM_MERGED: _ClassVar[ModelForm]
MODEL_FORM_UNSPECIFIED: ModelForm
MODEL_FORM_AS_TRAINED: ModelForm
MODEL_FORM_MERGED: ModelForm

class Checkpoint(_message.Message):
    __slots__ = ("step", "epoch", "save_time", "size_bytes", "download_bytes", "eval_metrics", "adapter")
    class EvalMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STEP_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SAVE_TIME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    EVAL_METRICS_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    step: int
    epoch: float
    save_time: _timestamp_pb2.Timestamp
    size_bytes: int
    download_bytes: int
    eval_metrics: _containers.ScalarMap[str, float]
    adapter: bool
    def __init__(self, step: _Optional[int] = ..., epoch: _Optional[float] = ..., save_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., size_bytes: _Optional[int] = ..., download_bytes: _Optional[int] = ..., eval_metrics: _Optional[_Mapping[str, float]] = ..., adapter: _Optional[bool] = ...) -> None: ...

class FinalModel(_message.Message):
    __slots__ = ("step", "save_time", "size_bytes", "download_bytes", "metrics", "adapter", "merged_ready")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STEP_FIELD_NUMBER: _ClassVar[int]
    SAVE_TIME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    MERGED_READY_FIELD_NUMBER: _ClassVar[int]
    step: int
    save_time: _timestamp_pb2.Timestamp
    size_bytes: int
    download_bytes: int
    metrics: _containers.ScalarMap[str, float]
    adapter: bool
    merged_ready: bool
    def __init__(self, step: _Optional[int] = ..., save_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., size_bytes: _Optional[int] = ..., download_bytes: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., adapter: _Optional[bool] = ..., merged_ready: _Optional[bool] = ...) -> None: ...

class ModelFile(_message.Message):
    __slots__ = ("path", "size_bytes", "sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    size_bytes: int
    sha256: str
    def __init__(self, path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class DownloadManifest(_message.Message):
    __slots__ = ("job_id", "checkpoint_step", "form", "step", "files", "total_bytes")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_STEP_FIELD_NUMBER: _ClassVar[int]
    FORM_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    checkpoint_step: int
    form: ModelForm
    step: int
    files: _containers.RepeatedCompositeFieldContainer[ModelFile]
    total_bytes: int
    def __init__(self, job_id: _Optional[str] = ..., checkpoint_step: _Optional[int] = ..., form: _Optional[_Union[ModelForm, str]] = ..., step: _Optional[int] = ..., files: _Optional[_Iterable[_Union[ModelFile, _Mapping]]] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("path", "offset", "data", "last")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    path: str
    offset: int
    data: bytes
    last: bool
    def __init__(self, path: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...
