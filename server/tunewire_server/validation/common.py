"""What every validation module shares: the collector of problems, the dataset plan and a few constants.

The bottom of the package: it imports nothing of it. Nothing here imports torch or grpc; the worker
imports CHAT_ROLES from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunewire.v1 import job_pb2
from tunewire_server.errors import FieldViolation, InvalidSpec

FILE_FORMATS = {
    job_pb2.FILE_FORMAT_JSONL: "jsonl",
    job_pb2.FILE_FORMAT_CSV: "csv",
    job_pb2.FILE_FORMAT_TSV: "tsv",
    job_pb2.FILE_FORMAT_PARQUET: "parquet",
}
MAX_LABELS = 10_000  # classes a classifier may have; checked before anything is sized by a label
# The roles a chat message may have: in SFT training data (checked here) and in a Predict chat input
# (checked by the inference worker). Listed in the order messages name them.
CHAT_ROLES = ("system", "user", "assistant", "tool", "developer")


class Violations:
    """Collects FieldViolations, so one InvalidSpec reports every problem found."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidSpec(self.items)


@dataclass
class DatasetPlan:
    """How the worker loads one dataset."""

    kind: str  # "file" | "hub" | "inline"
    path: str | None = None
    # For a file: the dataset root and the path under it, so the worker opens the file the same safe way
    # at the moment it reads it (a path checked here may be a symlink leading elsewhere by then).
    root: str | None = None
    relative: str | None = None
    max_bytes: int | None = None  # the server's max_dataset_bytes, which the worker's read stops at
    format: str | None = None
    name: str | None = None
    config: str | None = None
    split: str | None = None
    rows: list | None = None
    max_samples: int = 0

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}
