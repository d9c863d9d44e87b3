"""Where a job's artifacts live in its folder, and what a download may name (no torch, no grpc).

    jobs/<id>/checkpoints/checkpoint-N/   Trainer's checkpoints, each with its completeness marker
    jobs/<id>/model/                      the final model (or LoRA adapter), marker written last
    jobs/<id>/model/merged/               a LoRA job's merged model when the spec asked for save_merged_model
    jobs/<id>/merged/final/               a merged model computed on a download's first request (models/merge.py)
    jobs/<id>/merged/checkpoint-N/        the same for checkpoint N

Merged models live under merged/ rather than beside each checkpoint: Trainer's checkpoint rotation matches
every name under checkpoints/ that contains "checkpoint-N", and a file added inside model/ would no longer
match model/'s marker.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from pathlib import Path

from tunewire_server.checkpoints import MARKER

CHECKPOINTS_DIR = "checkpoints"
MODEL_DIR = "model"  # == worker/training/artifacts.MODEL_DIR (importing it is fine: it is torch-free, but a worker module)
META_FILE = "tunewire.json"  # == worker/training/artifacts.META_FILE
EMBEDDED_MERGED = "merged"  # == worker/training/sft.MERGED_DIR, the value written into meta["merged"]
MERGED_DIR = "merged"
FINAL = "final"


class Form(enum.Enum):
    """What a download sends: the weights as trained (full model or adapter), or an adapter merged into its base."""

    AS_TRAINED = "as_trained"
    MERGED = "merged"


@dataclass(frozen=True)
class Which:
    """The final model (checkpoint_step None) or the checkpoint saved at `checkpoint_step`."""

    checkpoint_step: int | None = None

    @property
    def name(self) -> str:
        return FINAL if self.checkpoint_step is None else f"checkpoint-{self.checkpoint_step}"


@dataclass(frozen=True)
class JobFolder:
    """The paths of one job's artifacts."""

    path: Path

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def model(self) -> Path:
        return self.path / MODEL_DIR

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"checkpoint-{step}"

    def source(self, which: Which) -> Path:
        """The folder the weights of `which` are in, as trained."""
        return self.model if which.checkpoint_step is None else self.checkpoint(which.checkpoint_step)

    @property
    def merged_root(self) -> Path:
        return self.path / MERGED_DIR

    def merged(self, which: Which) -> Path:
        """Where the merged form of `which` is kept once computed."""
        return self.merged_root / which.name

    def merged_log(self, which: Which) -> Path:
        """The merge worker's log for `which` (beside the merged folder, never inside it)."""
        return self.merged_root / f"{which.name}.merge.log"


def read_meta(model_dir: Path) -> dict:
    """The final model's tunewire.json (task, base_model, adapter, merged, ...); {} when absent or unreadable."""
    try:
        meta = json.loads((model_dir / META_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def marker_files(folder: Path) -> dict[str, dict]:
    """The file table of a folder's completeness marker: {relative path: {size, sha256}}. Call it only on a
    folder that checkpoints.verify passed; {} when the marker cannot be read."""
    try:
        marker = json.loads((folder / MARKER).read_text())
        files = marker["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return files if isinstance(files, dict) else {}


def marker_step(folder: Path) -> int | None:
    """The training step a folder's marker records (the final model's global step), or None."""
    try:
        return int(json.loads((folder / MARKER).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
