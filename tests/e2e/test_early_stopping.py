"""Early stopping on a run whose eval metric stops improving: a tiny classifier at a learning rate too small
to change its predictions, evaluated every 2 steps, patience 1. Training stops before max_steps, the
TrainingStopped event says so and names the step kept, the final model's weights are that checkpoint's
(not the last step's), and `tunewire watch` prints the stop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

import tunewire
from tests import tiny
from tests.support.server_thread import ServerThread, make_settings
from tunewire import CheckpointSaved, EvalResult, JobState, StateChange, TrainingStopped
from tunewire_server.layout import CHECKPOINTS_DIR, MODEL_DIR

MAX_STEPS = 20
SPEC = {
    "base_model": "tiny-bert",
    "classification": {"max_length": 32},
    "train_dataset": {"file": {"path": "train.jsonl"}},
    "eval_dataset": {"file": {"path": "eval.jsonl"}},
    "hyperparameters": {
        "max_steps": MAX_STEPS, "learning_rate": 1e-6, "per_device_train_batch_size": 8, "seed": 1234,
        "logging_steps": 2, "eval_strategy": "steps", "eval_steps": 2, "metric_for_best_model": "accuracy",
        "early_stopping": {"patience": 1, "threshold": 0.05},
    },
}


@pytest.fixture(scope="module")
def run(tmp_path_factory, models_root):
    # Every checkpoint is kept after success (keep_checkpoints -1), to compare the final model with them; no
    # warm worker, which the server's stop would wait for while it imports.
    settings = make_settings(tmp_path_factory.mktemp("early"), models_root, keep_checkpoints=-1, warm_worker=False)
    server = ServerThread(settings).start()
    root = server.settings.dataset_root
    tiny.write_jsonl(root / "train.jsonl", tiny.sentiment_rows(32))
    tiny.write_jsonl(root / "eval.jsonl", tiny.sentiment_rows(16, seed=1))
    client = tunewire.Client(server.address, timeout=120)
    job = client.wait(client.submit(SPEC).id, raise_on_failure=False)
    events = list(client.stream_metrics(job.id))
    yield server, job, events
    client.close()
    server.stop()


def test_training_stops_early_and_says_why(run):
    _, job, events = run
    assert job.state == JobState.SUCCEEDED, job.error
    [stopped] = [e.data for e in events if isinstance(e.data, TrainingStopped)]
    evals = [e.data for e in events if isinstance(e.data, EvalResult)]
    assert [e.step for e in evals] == [2, 4]  # the second evaluation did not improve: patience 1 ran out
    assert (stopped.step, stopped.max_steps, stopped.stopped_early) == (4, MAX_STEPS, True)
    assert "eval accuracy did not improve by more than 0.05 for 1 evaluation in a row" in stopped.reason
    assert (stopped.kept_step, stopped.metric, stopped.best_value) == (2, "accuracy", evals[0].metrics["accuracy"])
    assert job.metrics == evals[0].metrics  # the final model is step 2's: so are the job's metrics
    kinds = [type(e.data) for e in events]
    assert kinds.index(TrainingStopped) < len(kinds) - 1 and isinstance(events[-1].data, StateChange)
    assert [e.data.name for e in events if isinstance(e.data, CheckpointSaved)] == ["checkpoint-2", "checkpoint-4"]


def test_the_final_model_is_the_kept_checkpoint(run):
    server, job, _ = run
    folder = Path(server.settings.jobs_dir) / job.id
    final = load_file(str(folder / MODEL_DIR / "model.safetensors"))
    kept = load_file(str(folder / CHECKPOINTS_DIR / "checkpoint-2" / "model.safetensors"))
    last = load_file(str(folder / CHECKPOINTS_DIR / "checkpoint-4" / "model.safetensors"))
    assert final.keys() == kept.keys()
    assert all((final[name] == kept[name]).all() for name in final)
    assert not all((final[name] == last[name]).all() for name in final)  # the last step trained on


def test_watch_prints_the_stop(run):
    server, job, _ = run
    env = {**os.environ, "TUNEWIRE_ADDRESS": server.address, "COLUMNS": "200"}
    watched = subprocess.run([sys.executable, "-m", "tunewire.cli", "watch", job.id], capture_output=True,
                             text=True, env=env, timeout=300)
    assert watched.returncode == 0, watched.stderr
    assert "stopped early @ step 4/20" in watched.stdout and "final model from step 2" in watched.stdout
