"""Job specs as dicts (what `tunewire.Client.submit` takes): the benchmarks' fixed-step jobs and the tests'
small tiny-bert job."""

from __future__ import annotations


def _fixed_steps(max_steps: int, logging_steps: int, batch: int) -> dict:
    """Hyperparameters of a job that trains `max_steps` steps, with no eval and no checkpoints."""
    return {
        "max_steps": max_steps, "learning_rate": 0.001, "per_device_train_batch_size": batch,
        "logging_steps": logging_steps, "save_strategy": "no", "eval_strategy": "no",
        "precision": "fp32",
    }


def classification_spec(max_steps: int, *, logging_steps: int = 10, batch: int = 8,
                        model: str = "tiny-bert") -> dict:
    """The benchmark classification job: tiny-bert, sentiment.jsonl, fixed steps, no eval, no checkpoints."""
    return {
        "display_name": f"bench classification {max_steps} steps",
        "base_model": model,
        "classification": {"max_length": 32},
        "train_dataset": {"file": {"path": "sentiment.jsonl"}},
        "hyperparameters": _fixed_steps(max_steps, logging_steps, batch),
    }


def sft_spec(max_steps: int, *, logging_steps: int = 10, batch: int = 8) -> dict:
    """The benchmark SFT job: tiny-llama, text.jsonl, fixed steps, max_length 64, no eval, no checkpoints."""
    return {
        "display_name": f"bench sft {max_steps} steps",
        "base_model": "tiny-llama",
        "sft": {"text_field": "text", "max_length": 64},
        "train_dataset": {"file": {"path": "text.jsonl"}},
        "hyperparameters": _fixed_steps(max_steps, logging_steps, batch),
    }


def tiny_classification(train: str = "train.jsonl", **hyperparameters) -> dict:
    """The tests' small job: tiny-bert classification on `train` (under the dataset root), batch 4 unless
    `hyperparameters` say otherwise."""
    return {
        "base_model": "tiny-bert",
        "classification": {},
        "train_dataset": {"file": {"path": train}},
        "hyperparameters": {"per_device_train_batch_size": 4, **hyperparameters},
    }
