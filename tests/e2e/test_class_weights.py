"""Class weights change what a real Trainer run learns, and the final eval carries per-class metrics.

The data is built so the effect is exact, whatever the head's initialisation: every row has the same text,
so the model can only learn a prior over the labels, and gradient descent drives it to the rows' weighted
label frequencies. The data is 3 positive rows to 1 negative:
- no weights: positive scores 0.75, so every row is predicted positive (the minority's recall is 0);
- `balanced` (negative 2, positive 2/3): both weighted halves are equal, so each label scores 0.5;
- per_label negative 9: the negative half outweighs the positive 9 to 3, so negative scores 0.75 and
  every negative row is found (recall 1).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import tunewire
from tests import tiny
from tests.support.server_thread import ServerThread, make_settings
from tunewire import EvalResult, JobState
from tunewire_server.layout import WORKER_LOG

TEXT = "the pill i took for a week"
ROWS = [{"text": TEXT, "label": "negative" if i % 4 == 0 else "positive"} for i in range(32)]


def spec(class_weights: dict | None) -> dict:
    classification = {"max_length": 16, "label_names": ["negative", "positive"]}
    if class_weights is not None:
        classification["class_weights"] = class_weights
    return {
        "base_model": "tiny-bert",
        "classification": classification,
        "train_dataset": {"file": {"path": "train.jsonl"}},
        "eval_dataset": {"file": {"path": "train.jsonl"}},
        "hyperparameters": {"num_train_epochs": 10, "learning_rate": 0.01, "per_device_train_batch_size": 8,
                            "lr_scheduler_type": "constant", "logging_steps": 10,
                            "seed": 42},  # a fixed seed: dropout noise at lr 0.01 otherwise moves the end point
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory, models_root):
    """One job per weighting, on one server: (final job, its eval events, its scores for the text, worker log)."""
    server = ServerThread(make_settings(tmp_path_factory.mktemp("class-weights"), models_root)).start()
    tiny.write_jsonl(server.settings.dataset_root / "train.jsonl", ROWS)
    out = {}
    with tunewire.Client(server.address, timeout=120) as client:
        for name, weights in (("none", None), ("balanced", {"balanced": True}),
                              ("negative x9", {"per_label": {"negative": 9.0}})):
            job = client.submit(spec(weights))
            evals = [e.data for e in client.stream_metrics(job.id) if isinstance(e.data, EvalResult)]
            job = client.get(job.id)
            assert job.state == JobState.SUCCEEDED, job.error
            scores = client.predict(job.id, [TEXT])[0].scores
            log = (Path(server.settings.jobs_dir) / job.id / WORKER_LOG).read_text()
            out[name] = (job, evals, scores, log)
    yield out
    server.stop()


def test_without_weights_the_model_learns_the_majority(runs):
    job, _, scores, log = runs["none"]
    assert scores["positive"] == pytest.approx(0.75, abs=0.05)
    assert job.metrics["recall_negative"] == 0.0 and job.metrics["recall_positive"] == 1.0
    assert "class weights" not in log


def test_balanced_weights_even_out_the_classes(runs):
    _, _, scores, log = runs["balanced"]
    assert scores["positive"] == pytest.approx(0.5, abs=0.05)
    assert "class weights in the loss: negative=2, positive=0.6667" in log  # n / (classes * rows of the class)


def test_per_label_weights_turn_the_minority_into_the_prediction(runs):
    job, _, scores, log = runs["negative x9"]
    assert scores["negative"] == pytest.approx(0.75, abs=0.05)
    assert job.metrics["recall_negative"] == 1.0 and job.metrics["recall_positive"] == 0.0
    assert "class weights in the loss: negative=9, positive=1" in log


def test_every_eval_has_per_class_metrics_and_the_confusion_matrix(runs):
    job, evals, _, _ = runs["none"]
    keys = {f"{m}_{label}" for m in ("precision", "recall", "f1") for label in ("negative", "positive")}
    keys |= {"accuracy", "f1"}
    assert evals and all(keys <= set(e.metrics) for e in evals)
    assert keys <= set(job.metrics)
    # The worker's cm_<i>_<j> counts travel as the typed matrix, not as metrics.
    assert all(e.confusion_matrix is not None and not any(k.startswith("cm_") for k in e.metrics) for e in evals)
    matrix = evals[-1].confusion_matrix
    # rows: true label; columns: predicted. Every row predicted positive: 8 negative, 24 positive.
    assert matrix.labels == ["negative", "positive"] and matrix.counts == [[0, 8], [0, 24]]