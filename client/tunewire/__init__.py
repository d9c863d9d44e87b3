"""tunewire: the Python SDK for the tunewire fine-tuning service.

Light on purpose: it needs grpcio, protobuf and googleapis-common-protos (the google.rpc messages of rich
errors) only, and importing it never imports torch.

Its names load lazily (PEP 562): `from tunewire import Client` imports the client (and grpc) then, while
`import tunewire.v1.job_pb2` (the contract, which the server imports too) loads neither grpc nor the client.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "AsyncClient": "tunewire.aio",
    "Client": "tunewire.client",
    **dict.fromkeys((
        "AlreadyExistsError", "DeadlineExceededError", "FailedPreconditionError", "FieldViolation",
        "IntegrityError", "InvalidArgumentError", "JobFailedError", "NotFoundError", "PermissionDeniedError",
        "ResourceExhaustedError", "TunewireError", "UnauthenticatedError", "UnavailableError"), "tunewire.errors"),
    **dict.fromkeys((
        "ClassificationTask", "Dataset", "FileDataset", "HubDataset", "Hyperparameters", "InlineDataset", "JobSpec",
        "LoraConfig", "SftTask", "SpecError", "UploadedDatasetSource", "load_spec", "spec_from_dict"), "tunewire.spec"),
    **dict.fromkeys((
        "Checkpoint", "CheckpointSaved", "Checkpoints", "Classification", "ColumnSummary", "ConfusionMatrix",
        "DatasetReport", "DownloadedModel", "Estimate", "EvalResult", "FinalModel", "Generation", "Job", "JobError",
        "JobEvent", "JobState", "LabelCount", "MemoryEstimate", "ModelFile", "Prediction", "RowProblem", "StateChange",
        "TrainingStopped", "TrainLog", "UploadedDataset"),
        "tunewire.types"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tunewire' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup finds it without this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

