"""Early stopping and the best checkpoint in an SFT job, in process on a tiny Llama: TRL reports
mean_token_accuracy in its eval metrics, which early stopping watches; the run stops before max_steps and
reports it, and the job's TensorBoard folder gets its events."""

from __future__ import annotations

import pytest

from tests import tiny_lm
from tunewire.spec import spec_from_dict
from tunewire_server.layout import TENSORBOARD_DIR
from tunewire_server.protocol import EvalResult, Message, TrainingStopped
from tunewire_server.worker.training import sft
from tunewire_server.worker.training.callback import Control
from tunewire_server.worker.training.main import configure_callbacks, seed_everything


class Recorder:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def send(self, message: Message) -> None:
        self.messages.append(message)


@pytest.fixture(scope="module")
def root(models_root):
    return tiny_lm.ensure_built(models_root)


def test_early_stopping_on_mean_token_accuracy(root, tmp_path):
    rows = [{"text": f"the fox number {i} jumps over the lazy dog"} for i in range(16)]
    spec = spec_from_dict({
        "base_model": "tiny-llama", "sft": {"text_field": "text"}, "train_dataset": {"inline": {"rows": [{}]}},
        "eval_dataset": {"inline": {"rows": [{}]}},
        "hyperparameters": {"max_steps": 12, "learning_rate": 1e-3, "per_device_train_batch_size": 4,
                            "logging_steps": 1, "eval_strategy": "steps", "eval_steps": 2, "seed": 3,
                            "metric_for_best_model": "mean_token_accuracy",
                            # no improvement can exceed 1: the second evaluation ends training
                            "early_stopping": {"patience": 1, "threshold": 1.0}},
    })
    plan = {"task": "sft", "base_model": str(root / "tiny-llama"), "sft": sft.sft_plan(spec, {}),
            "train_dataset": {"kind": "inline", "rows": rows}, "eval_dataset": {"kind": "inline", "rows": rows[:4]}}
    control, out = Control(), Recorder()
    assert seed_everything(spec, plan) == 3
    configure_callbacks(control, spec, plan, tmp_path)
    sft.run(spec, plan, tmp_path, out, control)

    evals = [m for m in out.messages if isinstance(m, EvalResult)]
    [stopped] = [m for m in out.messages if isinstance(m, TrainingStopped)]
    assert [e.step for e in evals] == [2, 4] and "mean_token_accuracy" in evals[0].metrics
    assert (stopped.step, stopped.max_steps, stopped.stopped_early) == (4, 12, True)
    assert stopped.metric == "mean_token_accuracy" and stopped.kept_step in (2, 4)
    assert stopped.best_value == max(e.metrics["mean_token_accuracy"] for e in evals)
    assert list((tmp_path / TENSORBOARD_DIR).glob("events.out.tfevents.*"))
