"""The training callback's new events (worker/training/callback.py), carried to the API and the SDK: a
classifier's confusion matrix lifted out of the eval metrics, and TrainingStopped when training ends (early
or not, and which step's model is kept). Real TrainingArguments, TrainerState and EarlyStoppingCallback;
the messages go through their one encoding, the store's payload, api/convert.py and the SDK's types."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from transformers import BertConfig, EarlyStoppingCallback, TrainerControl, TrainerState, TrainingArguments

from tunewire.types import ConfusionMatrix as SdkMatrix
from tunewire.types import EvalResult as SdkEval
from tunewire.types import JobEvent
from tunewire.types import TrainingStopped as SdkStopped
from tunewire_server.api.convert import event_to_proto
from tunewire_server.protocol import (
    ConfusionMatrix,
    EvalResult,
    Message,
    TrainingStopped,
    decode,
    encode,
    payload,
)
from tunewire_server.store import Event
from tunewire_server.worker.training.callback import Control, EventCallback, training_stopped


class Recorder:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def send(self, message: Message) -> None:
        self.messages.append(message)


def through_the_api(message: Message) -> JobEvent:
    """The message as a client gets it: encoded by the worker, stored as a payload, converted to proto."""
    wire = decode(encode(message))
    stored = json.loads(json.dumps(payload(wire)))
    proto = event_to_proto(Event("job-1", 5, 1.0e9, wire.KIND, stored))
    return JobEvent.from_proto(proto)


@pytest.fixture
def args(tmp_path):
    return TrainingArguments(output_dir=str(tmp_path / "checkpoints"), report_to="none", use_cpu=True)


def state(step: int, max_steps: int, **fields) -> TrainerState:
    s = TrainerState(global_step=step, max_steps=max_steps, epoch=1.0)
    for k, v in fields.items():
        setattr(s, k, v)
    return s


def evaluate(callback: EventCallback, args, metrics: dict, labels: list[str]) -> EvalResult:
    model = SimpleNamespace(config=BertConfig(id2label=dict(enumerate(labels))))
    callback.on_evaluate(args, state(6, 10), TrainerControl(), metrics=metrics, model=model)
    return callback.out.messages[-1]


# --- the confusion matrix ------------------------------------------------------------------------


def test_confusion_cells_are_lifted_out_of_the_metrics_into_the_matrix(args):
    callback = EventCallback(Recorder(), Control())
    cells = {"eval_cm_0_0": 5.0, "eval_cm_0_1": 1.0, "eval_cm_0_2": 0.0, "eval_cm_1_0": 2.0, "eval_cm_1_1": 3.0,
             "eval_cm_1_2": 0.0, "eval_cm_2_0": 0.0, "eval_cm_2_1": 1.0, "eval_cm_2_2": 4.0}
    metrics = {"eval_loss": 0.5, "eval_accuracy": 0.75, "eval_f1_neg": 0.8, **cells, "epoch": 1.0}
    event = evaluate(callback, args, metrics, ["neg", "neutral", "pos"])
    assert not any(k.startswith("cm_") for k in event.metrics), event.metrics
    assert event.metrics == {"loss": 0.5, "accuracy": 0.75, "f1_neg": 0.8, "epoch": 1.0}
    assert callback.last_eval == event.metrics  # the job's metrics (Result) hold no cells either
    assert event.confusion_matrix == ConfusionMatrix(["neg", "neutral", "pos"], [5, 1, 0, 2, 3, 0, 0, 1, 4])

    got = through_the_api(event).data
    assert isinstance(got, SdkEval)
    assert got.metrics == event.metrics
    assert got.confusion_matrix == SdkMatrix(["neg", "neutral", "pos"], [[5, 1, 0], [2, 3, 0], [0, 1, 4]])


def test_an_eval_without_cells_has_no_matrix(args):
    callback = EventCallback(Recorder(), Control())
    event = evaluate(callback, args, {"eval_loss": 1.25}, ["a", "b"])
    assert event.confusion_matrix is None
    got = through_the_api(event).data
    assert got.confusion_matrix is None and got.metrics == {"loss": 1.25}


def test_a_cell_beyond_the_models_labels_is_named_by_its_index(args):
    callback = EventCallback(Recorder(), Control())
    event = evaluate(callback, args, {"eval_cm_0_0": 1.0, "eval_cm_2_1": 2.0}, ["a", "b"])
    assert event.confusion_matrix.labels == ["a", "b", "2"]
    assert event.confusion_matrix.rows() == [[1, 0, 0], [0, 0, 0], [0, 2, 0]]


# --- TrainingStopped -------------------------------------------------------------------------------


def best_args(tmp_path, **kw):
    return TrainingArguments(output_dir=str(tmp_path / "checkpoints"), report_to="none", use_cpu=True,
                             eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                             load_best_model_at_end=True, metric_for_best_model="f1", **kw)


def test_an_early_stop_says_why_and_keeps_the_best_step(tmp_path):
    stopper = EarlyStoppingCallback(early_stopping_patience=2, early_stopping_threshold=0.01)
    stopper.early_stopping_patience_counter = 2
    s = state(6, 20, best_metric=0.9, best_global_step=2,
              best_model_checkpoint=str(tmp_path / "checkpoints" / "checkpoint-2"))
    event = training_stopped(best_args(tmp_path), s, stopper)
    assert (event.step, event.max_steps, event.stopped_early, event.kept_step) == (6, 20, True, 2)
    assert (event.metric, event.best_value) == ("f1", 0.9)
    assert "eval f1 did not improve by more than 0.01 for 2 evaluations in a row" in event.reason

    got = through_the_api(event).data
    assert got == SdkStopped(6, 20, True, event.reason, 2, "f1", 0.9)


def test_training_that_ran_to_the_end_is_not_early(tmp_path):
    stopper = EarlyStoppingCallback(early_stopping_patience=3)
    stopper.early_stopping_patience_counter = 1
    event = training_stopped(best_args(tmp_path), state(20, 20, best_metric=0.5, best_global_step=20,
                             best_model_checkpoint=str(tmp_path / "checkpoints" / "checkpoint-20")), stopper)
    assert (event.stopped_early, event.kept_step) == (False, 20)
    assert event.reason == "training reached its last step (20 of 20)"


def test_without_load_best_the_last_step_is_kept(tmp_path, args):
    event = training_stopped(args, state(10, 10), None)
    assert (event.stopped_early, event.kept_step, event.metric, event.best_value) == (False, 10, "", None)
    got = through_the_api(event).data
    assert got.best_value is None and got.metric == ""


def test_a_nan_best_value_survives_the_wire(tmp_path):
    event = TrainingStopped(step=3, max_steps=9, stopped_early=True, reason="r", kept_step=1, metric="loss",
                            best_value=float("nan"))
    assert math.isnan(decode(encode(event)).best_value)
    assert math.isnan(through_the_api(event).data.best_value)


def test_on_train_end_sends_one_event_unless_training_was_interrupted(tmp_path, args):
    for stop, checkpoint, sent in ((False, False, 1), (True, False, 0), (False, True, 0)):
        control = Control()
        control.stop, control.checkpoint_and_stop = stop, checkpoint
        callback = EventCallback(Recorder(), control)
        callback.on_train_end(args, state(4, 4), TrainerControl())
        assert [type(m) for m in callback.out.messages] == [TrainingStopped] * sent


def test_control_adds_the_early_stopping_callback_the_plan_asks_for(tmp_path):
    control = Control()
    assert control.trainer_callbacks() == [] and control.early_stopper is None
    control.early_stopping = {"patience": 3, "threshold": 0.5}
    [stopper] = control.trainer_callbacks()
    assert stopper is control.early_stopper
    assert (stopper.early_stopping_patience, stopper.early_stopping_threshold) == (3, 0.5)


def test_the_kept_steps_eval_becomes_the_jobs_metrics(tmp_path):
    """With load_best_model_at_end the final model is the best checkpoint's: its evaluation is the job's."""
    args = best_args(tmp_path)
    stopper = EarlyStoppingCallback(early_stopping_patience=1)
    control = Control()
    control.early_stopper = stopper
    callback = EventCallback(Recorder(), control)
    model = SimpleNamespace(config=BertConfig(id2label={0: "a", 1: "b"}))
    for step, f1 in ((2, 0.8), (4, 0.6)):
        callback.on_evaluate(args, state(step, 20), TrainerControl(), metrics={"eval_f1": f1}, model=model)
    stopper.early_stopping_patience_counter = 1
    callback.on_train_end(args, state(4, 20, best_metric=0.8, best_global_step=2,
                                      best_model_checkpoint=str(tmp_path / "checkpoints" / "checkpoint-2")),
                          TrainerControl())
    assert callback.out.messages[-1].kept_step == 2
    assert callback.last_eval == {"f1": 0.8}
