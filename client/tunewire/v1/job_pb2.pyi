import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FileFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILE_FORMAT_UNSPECIFIED: _ClassVar[FileFormat]
    FILE_FORMAT_JSONL: _ClassVar[FileFormat]
    FILE_FORMAT_CSV: _ClassVar[FileFormat]
    FILE_FORMAT_TSV: _ClassVar[FileFormat]
    FILE_FORMAT_PARQUET: _ClassVar[FileFormat]

class PackingStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PACKING_STRATEGY_UNSPECIFIED: _ClassVar[PackingStrategy]
    PACKING_STRATEGY_BFD: _ClassVar[PackingStrategy]
    PACKING_STRATEGY_WRAPPED: _ClassVar[PackingStrategy]

class ModelDtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_DTYPE_UNSPECIFIED: _ClassVar[ModelDtype]
    MODEL_DTYPE_FLOAT32: _ClassVar[ModelDtype]
    MODEL_DTYPE_BFLOAT16: _ClassVar[ModelDtype]
    MODEL_DTYPE_FLOAT16: _ClassVar[ModelDtype]

class Precision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRECISION_UNSPECIFIED: _ClassVar[Precision]
    PRECISION_FP32: _ClassVar[Precision]
    PRECISION_BF16: _ClassVar[Precision]
    PRECISION_FP16: _ClassVar[Precision]

class EvalStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVAL_STRATEGY_UNSPECIFIED: _ClassVar[EvalStrategy]
    EVAL_STRATEGY_NO: _ClassVar[EvalStrategy]
    EVAL_STRATEGY_EPOCH: _ClassVar[EvalStrategy]
    EVAL_STRATEGY_STEPS: _ClassVar[EvalStrategy]

class SaveStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAVE_STRATEGY_UNSPECIFIED: _ClassVar[SaveStrategy]
    SAVE_STRATEGY_NO: _ClassVar[SaveStrategy]
    SAVE_STRATEGY_EPOCH: _ClassVar[SaveStrategy]
    SAVE_STRATEGY_STEPS: _ClassVar[SaveStrategy]

class LoraBias(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LORA_BIAS_UNSPECIFIED: _ClassVar[LoraBias]
    LORA_BIAS_NONE: _ClassVar[LoraBias]
    LORA_BIAS_ALL: _ClassVar[LoraBias]
    LORA_BIAS_LORA_ONLY: _ClassVar[LoraBias]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_CANCELLING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_PAUSING: _ClassVar[JobState]
    JOB_STATE_PAUSED: _ClassVar[JobState]

class ErrorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_KIND_UNSPECIFIED: _ClassVar[ErrorKind]
    ERROR_KIND_USER: _ClassVar[ErrorKind]
    ERROR_KIND_SYSTEM: _ClassVar[ErrorKind]
FILE_FORMAT_UNSPECIFIED: FileFormat
FILE_FORMAT_JSONL: FileFormat
FILE_FORMAT_CSV: FileFormat
FILE_FORMAT_TSV: FileFormat
FILE_FORMAT_PARQUET: FileFormat
PACKING_STRATEGY_UNSPECIFIED: PackingStrategy
PACKING_STRATEGY_BFD: PackingStrategy
PACKING_STRATEGY_WRAPPED: PackingStrategy
MODEL_DTYPE_UNSPECIFIED: ModelDtype
MODEL_DTYPE_FLOAT32: ModelDtype
MODEL_DTYPE_BFLOAT16: ModelDtype
MODEL_DTYPE_FLOAT16: ModelDtype
PRECISION_UNSPECIFIED: Precision
PRECISION_FP32: Precision
PRECISION_BF16: Precision
PRECISION_FP16: Precision
EVAL_STRATEGY_UNSPECIFIED: EvalStrategy
EVAL_STRATEGY_NO: EvalStrategy
EVAL_STRATEGY_EPOCH: EvalStrategy
EVAL_STRATEGY_STEPS: EvalStrategy
SAVE_STRATEGY_UNSPECIFIED: SaveStrategy
SAVE_STRATEGY_NO: SaveStrategy
SAVE_STRATEGY_EPOCH: SaveStrategy
SAVE_STRATEGY_STEPS: SaveStrategy
LORA_BIAS_UNSPECIFIED: LoraBias
LORA_BIAS_NONE: LoraBias
LORA_BIAS_ALL: LoraBias
LORA_BIAS_LORA_ONLY: LoraBias
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_CANCELLING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_PAUSING: JobState
JOB_STATE_PAUSED: JobState
ERROR_KIND_UNSPECIFIED: ErrorKind
ERROR_KIND_USER: ErrorKind
ERROR_KIND_SYSTEM: ErrorKind

class JobSpec(_message.Message):
    __slots__ = ("base_model", "classification", "sft", "train_dataset", "eval_dataset", "hyperparameters", "lora", "display_name", "max_retries")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    SFT_FIELD_NUMBER: _ClassVar[int]
    TRAIN_DATASET_FIELD_NUMBER: _ClassVar[int]
    EVAL_DATASET_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    classification: ClassificationTask
    sft: SftTask
    train_dataset: Dataset
    eval_dataset: Dataset
    hyperparameters: Hyperparameters
    lora: LoraConfig
    display_name: str
    max_retries: int
    def __init__(self, base_model: _Optional[str] = ..., classification: _Optional[_Union[ClassificationTask, _Mapping]] = ..., sft: _Optional[_Union[SftTask, _Mapping]] = ..., train_dataset: _Optional[_Union[Dataset, _Mapping]] = ..., eval_dataset: _Optional[_Union[Dataset, _Mapping]] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., lora: _Optional[_Union[LoraConfig, _Mapping]] = ..., display_name: _Optional[str] = ..., max_retries: _Optional[int] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("hub", "file", "inline", "uploaded", "max_samples")
    HUB_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    hub: HubDataset
    file: FileDataset
    inline: InlineDataset
    uploaded: UploadedDatasetSource
    max_samples: int
    def __init__(self, hub: _Optional[_Union[HubDataset, _Mapping]] = ..., file: _Optional[_Union[FileDataset, _Mapping]] = ..., inline: _Optional[_Union[InlineDataset, _Mapping]] = ..., uploaded: _Optional[_Union[UploadedDatasetSource, _Mapping]] = ..., max_samples: _Optional[int] = ...) -> None: ...

class UploadedDatasetSource(_message.Message):
    __slots__ = ("dataset_id",)
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    def __init__(self, dataset_id: _Optional[str] = ...) -> None: ...

class HubDataset(_message.Message):
    __slots__ = ("name", "config", "split")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: str
    split: str
    def __init__(self, name: _Optional[str] = ..., config: _Optional[str] = ..., split: _Optional[str] = ...) -> None: ...

class FileDataset(_message.Message):
    __slots__ = ("path", "format")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    path: str
    format: FileFormat
    def __init__(self, path: _Optional[str] = ..., format: _Optional[_Union[FileFormat, str]] = ...) -> None: ...

class InlineDataset(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    def __init__(self, rows: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ...) -> None: ...

class ClassificationTask(_message.Message):
    __slots__ = ("text_field", "text_pair_field", "label_field", "label_names", "max_length", "pad_to_max_length", "class_weights")
    TEXT_FIELD_FIELD_NUMBER: _ClassVar[int]
    TEXT_PAIR_FIELD_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PAD_TO_MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    CLASS_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    text_field: str
    text_pair_field: str
    label_field: str
    label_names: _containers.RepeatedScalarFieldContainer[str]
    max_length: int
    pad_to_max_length: bool
    class_weights: ClassWeights
    def __init__(self, text_field: _Optional[str] = ..., text_pair_field: _Optional[str] = ..., label_field: _Optional[str] = ..., label_names: _Optional[_Iterable[str]] = ..., max_length: _Optional[int] = ..., pad_to_max_length: _Optional[bool] = ..., class_weights: _Optional[_Union[ClassWeights, _Mapping]] = ...) -> None: ...

class ClassWeights(_message.Message):
    __slots__ = ("balanced", "per_label")
    class PerLabelEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    BALANCED_FIELD_NUMBER: _ClassVar[int]
    PER_LABEL_FIELD_NUMBER: _ClassVar[int]
    balanced: bool
    per_label: _containers.ScalarMap[str, float]
    def __init__(self, balanced: _Optional[bool] = ..., per_label: _Optional[_Mapping[str, float]] = ...) -> None: ...

class SftTask(_message.Message):
    __slots__ = ("text_field", "max_length", "formatting_template", "prompt_field", "completion_field", "response_template", "messages_field", "chat_template_source", "assistant_only_loss", "completion_only_loss", "packing", "packing_strategy", "model_dtype", "neftune_noise_alpha", "save_merged_model")
    TEXT_FIELD_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    FORMATTING_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    ASSISTANT_ONLY_LOSS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_ONLY_LOSS_FIELD_NUMBER: _ClassVar[int]
    PACKING_FIELD_NUMBER: _ClassVar[int]
    PACKING_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MODEL_DTYPE_FIELD_NUMBER: _ClassVar[int]
    NEFTUNE_NOISE_ALPHA_FIELD_NUMBER: _ClassVar[int]
    SAVE_MERGED_MODEL_FIELD_NUMBER: _ClassVar[int]
    text_field: str
    max_length: int
    formatting_template: str
    prompt_field: str
    completion_field: str
    response_template: str
    messages_field: str
    chat_template_source: str
    assistant_only_loss: bool
    completion_only_loss: bool
    packing: bool
    packing_strategy: PackingStrategy
    model_dtype: ModelDtype
    neftune_noise_alpha: float
    save_merged_model: bool
    def __init__(self, text_field: _Optional[str] = ..., max_length: _Optional[int] = ..., formatting_template: _Optional[str] = ..., prompt_field: _Optional[str] = ..., completion_field: _Optional[str] = ..., response_template: _Optional[str] = ..., messages_field: _Optional[str] = ..., chat_template_source: _Optional[str] = ..., assistant_only_loss: _Optional[bool] = ..., completion_only_loss: _Optional[bool] = ..., packing: _Optional[bool] = ..., packing_strategy: _Optional[_Union[PackingStrategy, str]] = ..., model_dtype: _Optional[_Union[ModelDtype, str]] = ..., neftune_noise_alpha: _Optional[float] = ..., save_merged_model: _Optional[bool] = ...) -> None: ...

class Hyperparameters(_message.Message):
    __slots__ = ("num_train_epochs", "max_steps", "learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps", "warmup_ratio", "weight_decay", "lr_scheduler_type", "seed", "eval_strategy", "eval_steps", "save_strategy", "save_steps", "logging_steps", "precision", "gradient_checkpointing", "eval_on_start", "save_total_limit", "metric_for_best_model", "greater_is_better", "load_best_model_at_end", "early_stopping")
    NUM_TRAIN_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    PER_DEVICE_TRAIN_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    PER_DEVICE_EVAL_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_ACCUMULATION_STEPS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_RATIO_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    LR_SCHEDULER_TYPE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EVAL_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    EVAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    SAVE_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    SAVE_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOGGING_STEPS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CHECKPOINTING_FIELD_NUMBER: _ClassVar[int]
    EVAL_ON_START_FIELD_NUMBER: _ClassVar[int]
    SAVE_TOTAL_LIMIT_FIELD_NUMBER: _ClassVar[int]
    METRIC_FOR_BEST_MODEL_FIELD_NUMBER: _ClassVar[int]
    GREATER_IS_BETTER_FIELD_NUMBER: _ClassVar[int]
    LOAD_BEST_MODEL_AT_END_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_FIELD_NUMBER: _ClassVar[int]
    num_train_epochs: float
    max_steps: int
    learning_rate: float
    per_device_train_batch_size: int
    per_device_eval_batch_size: int
    gradient_accumulation_steps: int
    warmup_ratio: float
    weight_decay: float
    lr_scheduler_type: str
    seed: int
    eval_strategy: EvalStrategy
    eval_steps: int
    save_strategy: SaveStrategy
    save_steps: int
    logging_steps: int
    precision: Precision
    gradient_checkpointing: bool
    eval_on_start: bool
    save_total_limit: int
    metric_for_best_model: str
    greater_is_better: bool
    load_best_model_at_end: bool
    early_stopping: EarlyStopping
    def __init__(self, num_train_epochs: _Optional[float] = ..., max_steps: _Optional[int] = ..., learning_rate: _Optional[float] = ..., per_device_train_batch_size: _Optional[int] = ..., per_device_eval_batch_size: _Optional[int] = ..., gradient_accumulation_steps: _Optional[int] = ..., warmup_ratio: _Optional[float] = ..., weight_decay: _Optional[float] = ..., lr_scheduler_type: _Optional[str] = ..., seed: _Optional[int] = ..., eval_strategy: _Optional[_Union[EvalStrategy, str]] = ..., eval_steps: _Optional[int] = ..., save_strategy: _Optional[_Union[SaveStrategy, str]] = ..., save_steps: _Optional[int] = ..., logging_steps: _Optional[int] = ..., precision: _Optional[_Union[Precision, str]] = ..., gradient_checkpointing: _Optional[bool] = ..., eval_on_start: _Optional[bool] = ..., save_total_limit: _Optional[int] = ..., metric_for_best_model: _Optional[str] = ..., greater_is_better: _Optional[bool] = ..., load_best_model_at_end: _Optional[bool] = ..., early_stopping: _Optional[_Union[EarlyStopping, _Mapping]] = ...) -> None: ...

class EarlyStopping(_message.Message):
    __slots__ = ("patience", "threshold")
    PATIENCE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    patience: int
    threshold: float
    def __init__(self, patience: _Optional[int] = ..., threshold: _Optional[float] = ...) -> None: ...

class LoraConfig(_message.Message):
    __slots__ = ("r", "alpha", "dropout", "target_modules", "bias")
    R_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    r: int
    alpha: float
    dropout: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    bias: LoraBias
    def __init__(self, r: _Optional[int] = ..., alpha: _Optional[float] = ..., dropout: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ..., bias: _Optional[_Union[LoraBias, str]] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ("code", "message", "field", "kind")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    field: str
    kind: ErrorKind
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., field: _Optional[str] = ..., kind: _Optional[_Union[ErrorKind, str]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "spec", "state", "error", "create_time", "start_time", "end_time", "attempts", "request_id", "last_seq", "progress", "metrics", "seed")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    id: str
    spec: JobSpec
    state: JobState
    error: JobError
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    attempts: int
    request_id: str
    last_seq: int
    progress: float
    metrics: _containers.ScalarMap[str, float]
    seed: int
    def __init__(self, id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempts: _Optional[int] = ..., request_id: _Optional[str] = ..., last_seq: _Optional[int] = ..., progress: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ..., seed: _Optional[int] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "seq", "time", "state_change", "train_log", "eval_result", "checkpoint_saved", "training_stopped")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOG_FIELD_NUMBER: _ClassVar[int]
    EVAL_RESULT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SAVED_FIELD_NUMBER: _ClassVar[int]
    TRAINING_STOPPED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    seq: int
    time: _timestamp_pb2.Timestamp
    state_change: StateChange
    train_log: TrainLog
    eval_result: EvalResult
    checkpoint_saved: CheckpointSaved
    training_stopped: TrainingStopped
    def __init__(self, job_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state_change: _Optional[_Union[StateChange, _Mapping]] = ..., train_log: _Optional[_Union[TrainLog, _Mapping]] = ..., eval_result: _Optional[_Union[EvalResult, _Mapping]] = ..., checkpoint_saved: _Optional[_Union[CheckpointSaved, _Mapping]] = ..., training_stopped: _Optional[_Union[TrainingStopped, _Mapping]] = ...) -> None: ...

class TrainingStopped(_message.Message):
    __slots__ = ("step", "max_steps", "stopped_early", "reason", "kept_step", "metric", "best_value")
    STEP_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    STOPPED_EARLY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    KEPT_STEP_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    BEST_VALUE_FIELD_NUMBER: _ClassVar[int]
    step: int
    max_steps: int
    stopped_early: bool
    reason: str
    kept_step: int
    metric: str
    best_value: float
    def __init__(self, step: _Optional[int] = ..., max_steps: _Optional[int] = ..., stopped_early: _Optional[bool] = ..., reason: _Optional[str] = ..., kept_step: _Optional[int] = ..., metric: _Optional[str] = ..., best_value: _Optional[float] = ...) -> None: ...

class StateChange(_message.Message):
    __slots__ = ("state", "error", "message")
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    state: JobState
    error: JobError
    message: str
    def __init__(self, state: _Optional[_Union[JobState, str]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class TrainLog(_message.Message):
    __slots__ = ("step", "max_steps", "epoch", "loss", "learning_rate", "grad_norm", "progress", "eta_seconds", "tokens_per_second", "num_tokens", "mean_token_accuracy", "extra")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STEP_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MEAN_TOKEN_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    step: int
    max_steps: int
    epoch: float
    loss: float
    learning_rate: float
    grad_norm: float
    progress: float
    eta_seconds: float
    tokens_per_second: float
    num_tokens: float
    mean_token_accuracy: float
    extra: _containers.ScalarMap[str, float]
    def __init__(self, step: _Optional[int] = ..., max_steps: _Optional[int] = ..., epoch: _Optional[float] = ..., loss: _Optional[float] = ..., learning_rate: _Optional[float] = ..., grad_norm: _Optional[float] = ..., progress: _Optional[float] = ..., eta_seconds: _Optional[float] = ..., tokens_per_second: _Optional[float] = ..., num_tokens: _Optional[float] = ..., mean_token_accuracy: _Optional[float] = ..., extra: _Optional[_Mapping[str, float]] = ...) -> None: ...

class EvalResult(_message.Message):
    __slots__ = ("step", "epoch", "metrics", "confusion_matrix")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STEP_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CONFUSION_MATRIX_FIELD_NUMBER: _ClassVar[int]
    step: int
    epoch: float
    metrics: _containers.ScalarMap[str, float]
    confusion_matrix: ConfusionMatrix
    def __init__(self, step: _Optional[int] = ..., epoch: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ..., confusion_matrix: _Optional[_Union[ConfusionMatrix, _Mapping]] = ...) -> None: ...

class ConfusionMatrix(_message.Message):
    __slots__ = ("labels", "counts")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, labels: _Optional[_Iterable[str]] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class CheckpointSaved(_message.Message):
    __slots__ = ("step", "name")
    STEP_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    step: int
    name: str
    def __init__(self, step: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...
