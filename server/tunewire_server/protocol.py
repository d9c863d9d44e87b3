"""Typed messages across the training worker boundary, and their one encoding: a JSON object per line.

    control plane ──JobRequest──▶ worker          (stdin; a multi-process run's ranks read it from a file)
    control plane ◀──Ready, TrainLog, EvalResult, CheckpointSaved, TrainingStopped, Result, ErrorMessage── worker
    control plane ──STOP_SIGNAL (cancel), CHECKPOINT_SIGNAL (shutdown)──▶ worker

Every message is a frozen dataclass; `encode` turns one into a line, `decode` a line back into one. On the
wire each object carries its `kind` and, for what a worker reports, `time` (when it happened, set by the
sender). JSON has no NaN or infinity: `encode` writes non-finite floats as the strings "nan", "inf" and
"-inf", and `decode` reads them back as floats in the fields that hold numbers. `payload` gives what the
store keeps as an event's payload (the same strings). Torch-free, grpc-free: both sides import it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

ErrorKind = Literal["USER", "SYSTEM"]

# Signals the control plane sends a training worker (its process group).
STOP_SIGNAL = signal.SIGUSR1  # stop at the next step, save nothing (cancel)
CHECKPOINT_SIGNAL = signal.SIGUSR2  # save a checkpoint at the next step, then stop (shutdown)
_NON_FINITE = ("nan", "inf", "-inf")


class ProtocolError(ValueError):
    """A line that is no message: not a JSON object (a torn line), or of an unknown kind."""


@dataclass(frozen=True)
class JobError:
    """Why a job's attempt failed: the one error shape, from the worker to the store and the API.
    Only SYSTEM errors are retried (a USER error would fail again). `field` names the spec's field at
    fault, "" if none."""

    code: str
    kind: ErrorKind
    message: str
    field: str = ""

    @classmethod
    def system(cls, code: str, message: str) -> JobError:
        return cls(code, "SYSTEM", message)

    def to_dict(self) -> dict:
        """The stored form (a job's error, a state_change event's error)."""
        return {"code": self.code, "kind": self.kind, "field": self.field, "message": self.message}

    @classmethod
    def from_dict(cls, data: dict) -> JobError:
        return cls(code=str(data.get("code", "")), kind=data.get("kind", ""),  # type: ignore[arg-type]
                   message=str(data.get("message", "")), field=str(data.get("field", "")))


@dataclass(frozen=True)
class Message:
    """A base for every message: `KIND` names it on the wire."""

    KIND: ClassVar[str] = ""
    time: float | None = field(default=None, kw_only=True)  # when it happened (epoch seconds), set by the sender

    def fields(self) -> dict:
        """The message's own fields as JSON values (without kind and time); None fields left out."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "time" and getattr(self, f.name) is not None}

    @classmethod
    def from_fields(cls, data: dict) -> Message:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class JobRequest(Message):
    """The job a training worker runs: `spec` is the JobSpec as the store holds it (protobuf JSON, parsed),
    `plan` what validation resolved (opaque here), `checkpoint_key` the hex key that signs checkpoints,
    `artifacts` and the s3_* fields the shared artifact store the job's checkpoints and model go to."""

    KIND: ClassVar[str] = "request"
    job_id: str
    spec: dict
    plan: dict
    job_dir: str
    log_path: str
    checkpoint_key: str
    nan_loss_steps: int = 3
    train_processes: int = 0
    # The shared artifact store (shared_store.py): "" keeps everything in the local job folder. S3 credentials
    # never travel here: the worker reads the AWS_* variables it inherits.
    artifacts: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_part_size: int = 8 << 20
    s3_max_concurrency: int = 4
    s3_max_retries: int = 5
    s3_retry_timeout_s: float = 60.0


@dataclass(frozen=True)
class Ready(Message):
    """The worker's imports are done and its signal handlers installed: it can take a job."""

    KIND: ClassVar[str] = "ready"


@dataclass(frozen=True)
class TrainLog(Message):
    """One training log: the field names are the API's TrainLog fields; None ones were not logged."""

    KIND: ClassVar[str] = "train_log"
    step: int
    max_steps: int
    epoch: float
    progress: float
    loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    num_tokens: float | None = None
    mean_token_accuracy: float | None = None
    eta_seconds: float | None = None
    tokens_per_second: float | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_fields(cls, data: dict) -> TrainLog:
        data = {k: _number(v) for k, v in data.items()}
        return super().from_fields({**data, "extra": _numbers(data.get("extra") or {})})


@dataclass(frozen=True)
class ConfusionMatrix:
    """Counts of (true label, predicted label) on the eval data: `labels` in class-index order, `counts`
    row-major (row: the true label), len(labels) ** 2 of them."""

    labels: list[str]
    counts: list[int]

    def to_dict(self) -> dict:
        return {"labels": list(self.labels), "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, data: dict) -> ConfusionMatrix:
        return cls([str(label) for label in data.get("labels") or ()], [int(c) for c in data.get("counts") or ()])

    def rows(self) -> list[list[int]]:
        n = len(self.labels)
        return [list(self.counts[i * n:(i + 1) * n]) for i in range(n)]


@dataclass(frozen=True)
class EvalResult(Message):
    """An evaluation's metrics, names without the "eval_" prefix; a classifier's confusion matrix."""

    KIND: ClassVar[str] = "eval_result"
    step: int
    epoch: float
    metrics: dict[str, float]
    confusion_matrix: ConfusionMatrix | None = None

    def fields(self) -> dict:
        data = super().fields()
        if self.confusion_matrix is not None:
            data["confusion_matrix"] = self.confusion_matrix.to_dict()
        return data

    @classmethod
    def from_fields(cls, data: dict) -> EvalResult:
        matrix = data.get("confusion_matrix")
        return super().from_fields({**data, "epoch": _number(data.get("epoch")),
                                    "metrics": _numbers(data.get("metrics") or {}),
                                    "confusion_matrix": ConfusionMatrix.from_dict(matrix)
                                    if isinstance(matrix, dict) else None})


@dataclass(frozen=True)
class TrainingStopped(Message):
    """Training has ended, before the final model is saved: at which step, whether early stopping ended it
    before max_steps (and why, in words), which step's weights become the final model (`kept_step`: the best
    checkpoint's with load_best_model_at_end, else the last), and the best value of `metric` when one is
    tracked (metric_for_best_model, without "eval_")."""

    KIND: ClassVar[str] = "training_stopped"
    step: int
    max_steps: int
    stopped_early: bool
    reason: str
    kept_step: int
    metric: str = ""
    best_value: float | None = None

    @classmethod
    def from_fields(cls, data: dict) -> TrainingStopped:
        return super().from_fields({**data, "best_value": _number(data.get("best_value"))})


@dataclass(frozen=True)
class CheckpointSaved(Message):
    """A complete checkpoint was saved (and marked) as job_dir/checkpoints/`name`."""

    KIND: ClassVar[str] = "checkpoint_saved"
    step: int
    name: str


@dataclass(frozen=True)
class Result(Message):
    """The job finished: the final model is saved; `metrics` of its last evaluation."""

    KIND: ClassVar[str] = "result"
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_fields(cls, data: dict) -> Result:
        return super().from_fields({**data, "metrics": _numbers(data.get("metrics") or {})})


@dataclass(frozen=True)
class ErrorMessage(Message):
    """The job failed: the worker's one error report."""

    KIND: ClassVar[str] = "error"
    error: JobError

    def fields(self) -> dict:
        return {"error": self.error.to_dict()}

    @classmethod
    def from_fields(cls, data: dict) -> ErrorMessage:
        error = data.get("error")
        if not isinstance(error, dict):
            raise ProtocolError("an error message without its error")
        return cls(JobError.from_dict(error), time=data.get("time"))


KINDS: dict[str, type[Message]] = {cls.KIND: cls for cls in (
    JobRequest, Ready, TrainLog, EvalResult, CheckpointSaved, TrainingStopped, Result, ErrorMessage)}
# what is stored as a job's events while it runs
PROGRESS = (TrainLog, EvalResult, CheckpointSaved, TrainingStopped)


def payload(message: Message) -> dict:
    """What the store keeps of a message as an event's payload: its fields, non-finite floats as strings."""
    return _finite(message.fields())


def encode(message: Message) -> str:
    """One line (without its newline) holding `message`."""
    data: dict[str, Any] = {**message.fields(), "kind": message.KIND}
    if message.time is not None:
        data["time"] = message.time
    return json_line(data)


def json_line(data: dict) -> str:
    """`data` as one compact JSON line, non-finite floats as strings. Also for the untyped messages of the
    inference and merge workers, whose protocols are their own."""
    return json.dumps(_finite(data), separators=(",", ":"), allow_nan=False)


def decode(line: str | bytes) -> Message:
    """The message a line holds. Raises ProtocolError for a torn line or an unknown kind."""
    try:
        data = json.loads(line)
    except ValueError:
        raise ProtocolError("not a JSON line (torn?)") from None
    if not isinstance(data, dict):
        raise ProtocolError("not a JSON object")
    cls = KINDS.get(data.get("kind"))  # type: ignore[arg-type]
    if cls is None:
        raise ProtocolError(f"unknown message kind {str(data.get('kind'))[:40]!r}")
    try:
        message = cls.from_fields({k: v for k, v in data.items() if k != "kind"})
    except TypeError as exc:  # a required field missing
        raise ProtocolError(f"a {cls.KIND} message without its fields ({exc})") from None
    return message


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: non-finite floats become "nan", "inf", "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _number(value: Any) -> Any:
    """A number field's value: "nan", "inf", "-inf" back to floats."""
    return float(value) if isinstance(value, str) and value in _NON_FINITE else value


def _numbers(values: dict) -> dict:
    return {k: _number(v) for k, v in values.items()}
