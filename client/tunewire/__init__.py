"""tunewire: the Python SDK for the tunewire fine-tuning service.

Light on purpose: it needs grpcio, protobuf and googleapis-common-protos (the google.rpc messages of rich
errors) only, and importing it never imports torch.
"""

from tunewire.aio import AsyncClient
from tunewire.client import Client
from tunewire.errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    JobFailedError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    TunewireError,
    UnauthenticatedError,
    UnavailableError,
)
from tunewire.spec import (
    ClassificationTask,
    Dataset,
    FileDataset,
    HubDataset,
    Hyperparameters,
    InlineDataset,
    JobSpec,
    LoraConfig,
    SftTask,
    SpecError,
    UploadedDatasetSource,
    load_spec,
    spec_from_dict,
)
from tunewire.types import (
    CheckpointSaved,
    Classification,
    ColumnSummary,
    DatasetReport,
    EvalResult,
    Generation,
    Job,
    JobError,
    JobEvent,
    JobState,
    LabelCount,
    Prediction,
    RowProblem,
    StateChange,
    TrainLog,
    UploadedDataset,
)

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError", "AsyncClient", "CheckpointSaved", "Classification", "ClassificationTask", "Client",
    "ColumnSummary", "Dataset", "DatasetReport", "DeadlineExceededError", "EvalResult", "FailedPreconditionError", "FieldViolation", "FileDataset",
    "Generation", "HubDataset", "Hyperparameters", "InlineDataset", "InvalidArgumentError", "Job", "JobError",
    "JobEvent", "JobFailedError", "JobSpec", "JobState", "LabelCount", "LoraConfig", "NotFoundError", "PermissionDeniedError",
    "Prediction", "ResourceExhaustedError", "RowProblem", "SftTask", "SpecError", "StateChange", "TrainLog",
    "TunewireError", "UnauthenticatedError", "UnavailableError", "UploadedDataset", "UploadedDatasetSource", "load_spec", "spec_from_dict",
]
