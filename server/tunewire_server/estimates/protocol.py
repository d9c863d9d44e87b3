"""Typed messages across the estimate worker's pipe: one EstimateRequest in (a JSON line on stdin), one
EstimateReply or EstimateFailure out (a JSON line on the message pipe)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EstimateRequest:
    """The job to estimate: its spec (protobuf JSON), the plan validation resolved, and whether to probe."""

    spec_json: str
    plan: dict
    probe_steps: int = 0  # real training steps to time after a warm-up step; 0: no probe
    cache_dir: str = ""
    memory_limit_bytes: int = 0  # the server's cap on the device memory a job may count on; 0: none


@dataclass(frozen=True)
class ModelFacts:
    """What the memory formula needs from the model's config; parameter counts from a meta-device model."""

    model_type: str
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    total_parameters: int
    trainable_parameters: int  # all of them, or the LoRA adapter's (plus a classifier head)
    gated_mlp: bool = False  # Llama-style gate and up projections
    num_labels: int = 0  # classification: the head's outputs (logits are batch x labels, not x vocab)


@dataclass(frozen=True)
class DataFacts:
    """Counts of the job's data as training sees it (after formatting, before truncation)."""

    train_rows: int
    eval_rows: int
    train_tokens: int
    truncated_rows: int
    max_length: int
    p50: int
    p95: int
    max: int
    train_sequences: int  # rows the trainer iterates (packing: packed rows)
    mean_train_length: float  # mean tokens per sequence the trainer sees (after truncation / packing)
    mean_eval_length: float = 0.0
    peak_length: int = 0  # the longest row a micro-batch holds (max_length when padded to it or packed)
    mean_unpadded_length: float = 0.0  # mean tokens per sequence trained on, padding left out (TRL's num_tokens)


@dataclass(frozen=True)
class DeviceFacts:
    """The device the server trains on and the memory it has for training."""

    name: str  # "cpu", "cuda:0 (NVIDIA H200)"
    kind: str  # "cpu" or "cuda"
    memory_bytes: int


@dataclass(frozen=True)
class ProbeFacts:
    """A short probe: `steps` optimizer steps of `batch` rows, timed after a warm-up step."""

    steps: int
    seconds: float
    tokens: int  # tokens in the timed steps' batches (padding included, as the trainer computes them)
    load_seconds: float = 0.0  # loading the model (part of a job's setup)
    warmup_seconds: float = 0.0  # the first, untimed step: first-call costs a job's first step pays too
    build_seconds: float = 0.0  # SFT: the job's own data phase, model load and SFTTrainer creation, timed
    unpadded: bool = False  # `tokens` leave padding out (TRL's num_tokens), not the padded batch sizes
    batch: int = 0  # rows per micro-batch probed (the job's, or the largest estimated to fit)


@dataclass(frozen=True)
class EstimateReply:
    """The worker's answer."""

    model: ModelFacts
    data: DataFacts
    device: DeviceFacts
    precision_bytes: int  # bytes per weight in the job's dtype
    mixed_precision: bool  # bf16/fp16 autocast on a GPU
    gradient_checkpointing: bool
    probe: ProbeFacts | None = None
    notes: list[str] = field(default_factory=list)
    prepare_seconds: float = 0.0  # loading, formatting and tokenizing the data: the job's data phase, timed here


@dataclass(frozen=True)
class EstimateFailure:
    """The job's input is at fault (field named) or the worker failed."""

    message: str
    field: str = ""
    code: str = ""


def encode(message: EstimateRequest | EstimateReply | EstimateFailure) -> str:
    """One JSON line (without its newline)."""
    return json.dumps({"kind": type(message).__name__, **dataclasses.asdict(message)})


def decode(line: str | bytes) -> EstimateRequest | EstimateReply | EstimateFailure:
    """The message a line holds; ValueError for anything else."""
    data = json.loads(line)
    kind = data.pop("kind", None)
    if kind == "EstimateRequest":
        return EstimateRequest(**data)
    if kind == "EstimateFailure":
        return EstimateFailure(**data)
    if kind == "EstimateReply":
        probe = data.pop("probe")
        return EstimateReply(model=ModelFacts(**data.pop("model")), data=DataFacts(**data.pop("data")),
                             device=DeviceFacts(**data.pop("device")),
                             probe=ProbeFacts(**probe) if probe else None, **data)
    raise ValueError(f"not an estimate message: {kind!r}")
