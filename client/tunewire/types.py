"""Typed results the SDK returns: plain dataclasses, built from the wire messages."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tunewire.v1 import dataset_pb2, job_pb2, model_pb2, tuning_service_pb2


class JobState(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    PAUSING = "PAUSING"
    PAUSED = "PAUSED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)

    @classmethod
    def from_proto(cls, value: int) -> JobState:
        return cls(job_pb2.JobState.Name(value).removeprefix("JOB_STATE_"))

    def to_proto(self) -> int:
        return job_pb2.JobState.Value("JOB_STATE_" + self.value)


@dataclass(frozen=True)
class JobError:
    code: str
    message: str
    field: str
    kind: str  # "USER" or "SYSTEM"

    @classmethod
    def from_proto(cls, msg: job_pb2.JobError) -> JobError:
        return cls(msg.code, msg.message, msg.field, job_pb2.ErrorKind.Name(msg.kind).removeprefix("ERROR_KIND_"))


def _time(msg, name: str) -> datetime | None:
    return getattr(msg, name).ToDatetime() if msg.HasField(name) else None


@dataclass(frozen=True)
class Job:
    id: str
    state: JobState
    spec: job_pb2.JobSpec
    error: JobError | None
    created: datetime | None
    started: datetime | None
    ended: datetime | None
    attempts: int
    request_id: str
    last_seq: int
    progress: float
    metrics: dict[str, float]
    seed: int = 0  # the seed the job runs with (the spec's, or one drawn at submission): repeat it exactly

    @classmethod
    def from_proto(cls, msg: job_pb2.Job) -> Job:
        return cls(
            id=msg.id,
            state=JobState.from_proto(msg.state),
            spec=msg.spec,
            error=JobError.from_proto(msg.error) if msg.HasField("error") else None,
            created=_time(msg, "create_time"),
            started=_time(msg, "start_time"),
            ended=_time(msg, "end_time"),
            attempts=msg.attempts,
            request_id=msg.request_id,
            last_seq=msg.last_seq,
            progress=msg.progress,
            metrics=dict(msg.metrics),
            seed=msg.seed,
        )


@dataclass(frozen=True)
class StateChange:
    state: JobState
    message: str
    error: JobError | None


@dataclass(frozen=True)
class TrainLog:
    step: int
    max_steps: int
    epoch: float
    progress: float
    loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    eta_seconds: float | None = None
    tokens_per_second: float | None = None
    num_tokens: float | None = None
    mean_token_accuracy: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ConfusionMatrix:
    """Counts on the eval data: counts[i][j] is how many examples of labels[i] were predicted labels[j]."""

    labels: list[str]
    counts: list[list[int]]

    @classmethod
    def from_proto(cls, msg: job_pb2.ConfusionMatrix) -> ConfusionMatrix:
        n = len(msg.labels)
        flat = list(msg.counts)
        return cls(list(msg.labels), [flat[i * n:(i + 1) * n] for i in range(n)])


@dataclass(frozen=True)
class EvalResult:
    step: int
    epoch: float
    metrics: dict[str, float]
    confusion_matrix: ConfusionMatrix | None = None  # a classifier's


@dataclass(frozen=True)
class CheckpointSaved:
    step: int
    name: str


@dataclass(frozen=True)
class TrainingStopped:
    """Training has ended: at `step`, early or not and why, and which step's weights the final model holds."""

    step: int
    max_steps: int
    stopped_early: bool
    reason: str
    kept_step: int
    metric: str = ""  # metric_for_best_model, when a best model is tracked
    best_value: float | None = None


EventData = StateChange | TrainLog | EvalResult | CheckpointSaved | TrainingStopped


@dataclass(frozen=True)
class JobEvent:
    """One event of a job. `data` is a StateChange, TrainLog, EvalResult, CheckpointSaved or TrainingStopped."""

    job_id: str
    seq: int
    time: datetime
    data: EventData

    @property
    def kind(self) -> str:
        return type(self.data).__name__

    @classmethod
    def from_proto(cls, msg: job_pb2.JobEvent) -> JobEvent:
        which = msg.WhichOneof("kind")
        data: EventData
        if which == "state_change":
            sc = msg.state_change
            data = StateChange(JobState.from_proto(sc.state), sc.message,
                               JobError.from_proto(sc.error) if sc.HasField("error") else None)
        elif which == "train_log":
            t = msg.train_log
            optional = {name: getattr(t, name) for name in (
                "loss", "learning_rate", "grad_norm", "eta_seconds", "tokens_per_second", "num_tokens",
                "mean_token_accuracy") if t.HasField(name)}
            data = TrainLog(step=t.step, max_steps=t.max_steps, epoch=t.epoch, progress=t.progress,
                            extra=dict(t.extra), **optional)
        elif which == "eval_result":
            e = msg.eval_result
            data = EvalResult(e.step, e.epoch, dict(e.metrics),
                              ConfusionMatrix.from_proto(e.confusion_matrix) if e.HasField("confusion_matrix")
                              else None)
        elif which == "checkpoint_saved":
            data = CheckpointSaved(msg.checkpoint_saved.step, msg.checkpoint_saved.name)
        elif which == "training_stopped":
            t = msg.training_stopped
            data = TrainingStopped(t.step, t.max_steps, t.stopped_early, t.reason, t.kept_step, t.metric,
                                   t.best_value if t.HasField("best_value") else None)
        else:
            raise ValueError(f"event {msg.seq} has no known kind")
        return cls(msg.job_id, msg.seq, msg.time.ToDatetime(), data)


@dataclass(frozen=True)
class Classification:
    label: str
    score: float
    scores: dict[str, float]  # every label, highest first


@dataclass(frozen=True)
class Generation:
    text: str
    num_tokens: int
    finish_reason: str


Prediction = Classification | Generation


def prediction_from_proto(msg: tuning_service_pb2.Prediction) -> Prediction:
    if msg.HasField("classification"):
        c = msg.classification
        return Classification(c.label, c.score, {s.label: s.score for s in c.scores})
    g = msg.generation
    return Generation(g.text, g.num_tokens, g.finish_reason)


@dataclass(frozen=True)
class ColumnSummary:
    name: str
    type: str  # string, integer, number, boolean, list, object, null or mixed
    missing: int  # rows in which the column is absent or null


@dataclass(frozen=True)
class RowProblem:
    row: int  # 1-based data row
    kind: str  # "EMPTY" or "NOT_UTF8"
    column: str


@dataclass(frozen=True)
class LabelCount:
    value: str
    count: int
    missing: bool = False  # the count of rows without the column


@dataclass(frozen=True)
class DatasetReport:
    """What the server found in an uploaded file when it arrived."""

    num_rows: int
    columns: list[ColumnSummary]
    problem_rows: list[RowProblem]  # the first 100
    problem_row_count: int
    label_column: str
    label_counts: list[LabelCount]  # most frequent first
    columns_truncated: bool
    labels_truncated: bool

    @classmethod
    def from_proto(cls, msg: dataset_pb2.DatasetReport) -> DatasetReport:
        return cls(
            num_rows=msg.num_rows,
            columns=[ColumnSummary(c.name, c.type, c.missing) for c in msg.columns],
            problem_rows=[RowProblem(p.row, dataset_pb2.RowProblemKind.Name(p.kind).removeprefix("ROW_PROBLEM_KIND_"),
                                     p.column) for p in msg.problem_rows],
            problem_row_count=msg.problem_row_count,
            label_column=msg.label_column,
            label_counts=[LabelCount(c.value, c.count, c.missing) for c in msg.label_counts],
            columns_truncated=msg.columns_truncated,
            labels_truncated=msg.labels_truncated,
        )


@dataclass(frozen=True)
class UploadedDataset:
    """A dataset stored on the server. Name it in a job spec with
    `{"train_dataset": {"uploaded": {"dataset_id": dataset.id}}}`."""

    id: str
    name: str
    format: str  # "JSONL", "CSV", "TSV" or "PARQUET"
    size_bytes: int
    sha256: str
    created: datetime | None
    report: DatasetReport

    @classmethod
    def from_proto(cls, msg: dataset_pb2.UploadedDataset) -> UploadedDataset:
        return cls(id=msg.id, name=msg.name, format=job_pb2.FileFormat.Name(msg.format).removeprefix("FILE_FORMAT_"),
                   size_bytes=msg.size_bytes, sha256=msg.sha256, created=_time(msg, "create_time"),
                   report=DatasetReport.from_proto(msg.report))


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint of a job: `client.download(job_id, dest, checkpoint=step)` fetches it."""

    step: int
    epoch: float | None
    saved: datetime | None
    size_bytes: int  # every file on the server, optimizer state included
    download_bytes: int  # what a download of it (as trained) sends
    eval_metrics: dict[str, float]  # logged at this step
    adapter: bool  # a LoRA adapter: `merged=True` can be asked for

    @classmethod
    def from_proto(cls, msg: model_pb2.Checkpoint) -> Checkpoint:
        return cls(step=msg.step, epoch=msg.epoch if msg.HasField("epoch") else None, saved=_time(msg, "save_time"),
                   size_bytes=msg.size_bytes, download_bytes=msg.download_bytes, eval_metrics=dict(msg.eval_metrics),
                   adapter=msg.adapter)


@dataclass(frozen=True)
class FinalModel:
    """The final model of a succeeded job: `client.download(job_id, dest)` fetches it."""

    step: int | None
    saved: datetime | None
    size_bytes: int
    download_bytes: int
    metrics: dict[str, float]  # the job's final metrics
    adapter: bool
    merged_ready: bool  # the merged form is on the server already (no merge on the first download)

    @classmethod
    def from_proto(cls, msg: model_pb2.FinalModel) -> FinalModel:
        return cls(step=msg.step if msg.HasField("step") else None, saved=_time(msg, "save_time"),
                   size_bytes=msg.size_bytes, download_bytes=msg.download_bytes, metrics=dict(msg.metrics),
                   adapter=msg.adapter, merged_ready=msg.merged_ready)


@dataclass(frozen=True)
class Checkpoints:
    """What `client.list_checkpoints` returns: the complete checkpoints, oldest first, and the final model
    (None unless the job succeeded)."""

    job_id: str
    checkpoints: list[Checkpoint]
    final: FinalModel | None

    @classmethod
    def from_proto(cls, job_id: str, msg: tuning_service_pb2.ListCheckpointsResponse) -> Checkpoints:
        return cls(job_id, [Checkpoint.from_proto(c) for c in msg.checkpoints],
                   FinalModel.from_proto(msg.final_model) if msg.HasField("final_model") else None)


@dataclass(frozen=True)
class ModelFile:
    path: str  # the file's name in the download folder
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class DownloadedModel:
    """A finished download: `path` is a folder that loads with transformers' `from_pretrained` (or, for an
    adapter, peft's `PeftModel.from_pretrained` on its base model). Every file's sha256 was checked."""

    path: Path
    job_id: str
    checkpoint: int | None  # None for the final model
    merged: bool
    step: int | None  # the training step of these weights, where known
    files: list[ModelFile]
    total_bytes: int
    received_bytes: int  # bytes received over the network (less than total_bytes after a resume)
    reconnects: int  # times the download was resumed after a dropped connection


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes of a job's training process, by part, and its parameter counts."""

    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    overhead_bytes: int
    total_bytes: int
    trainable_parameters: int
    total_parameters: int


@dataclass(frozen=True)
class Estimate:
    """What `client.estimate(spec)` returns: the job's data, steps, peak memory against the server's training
    device (fits, and when not the largest batch size and max_length that would), and the time it would take."""

    train_rows: int
    eval_rows: int
    train_tokens: int
    truncated_rows: int
    max_length: int
    token_length_p50: int
    token_length_p95: int
    token_length_max: int
    steps_per_epoch: int
    total_steps: int
    memory: MemoryEstimate
    device: str
    device_memory_bytes: int
    fits: bool
    suggested_batch_size: int  # when it does not fit; 0 = none (or it fits)
    suggested_max_length: int
    estimated_seconds: float  # 0 when there was no basis
    time_basis: str
    notes: list[str]

    @classmethod
    def from_proto(cls, msg: tuning_service_pb2.JobEstimate) -> Estimate:
        m = msg.memory
        memory = MemoryEstimate(m.weights_bytes, m.gradients_bytes, m.optimizer_bytes, m.activations_bytes,
                                m.overhead_bytes, m.total_bytes, m.trainable_parameters, m.total_parameters)
        return cls(msg.train_rows, msg.eval_rows, msg.train_tokens, msg.truncated_rows, msg.max_length,
                   msg.token_length_p50, msg.token_length_p95, msg.token_length_max, msg.steps_per_epoch,
                   msg.total_steps, memory, msg.device, msg.device_memory_bytes, msg.fits, msg.suggested_batch_size,
                   msg.suggested_max_length, msg.estimated_seconds, msg.time_basis, list(msg.notes))
