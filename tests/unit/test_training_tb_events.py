"""TensorBoard event files (worker/training/tb_events.py): transformers' TensorBoardCallback writing into the
folder it is given, without the confusion-matrix cells; read back with tensorboard's own EventAccumulator."""

from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import TrainerControl, TrainerState, TrainingArguments

from tunewire_server.worker.training.tb_events import JobTensorBoard, tensorboard_callback


def test_logs_become_scalars_in_the_folder_without_confusion_cells(tmp_path):
    folder = tmp_path / "job" / "tensorboard"
    board = tensorboard_callback(folder)
    assert isinstance(board, JobTensorBoard)
    args = TrainingArguments(output_dir=str(tmp_path / "job" / "checkpoints"), report_to="none", use_cpu=True)
    state, control = TrainerState(), TrainerControl()
    board.on_train_begin(args, state, control)
    for step, loss in ((1, 2.0), (2, 1.5)):
        state.global_step = step
        board.on_log(args, state, control, logs={"loss": loss, "learning_rate": 1e-3})
    board.on_log(args, state, control, logs={"eval_loss": 1.25, "eval_cm_0_1": 3.0})
    board.on_train_end(args, state, control)

    [events] = list(folder.glob("events.out.tfevents.*"))
    assert not (tmp_path / "job" / "checkpoints").exists()  # not transformers' default output_dir/runs
    acc = EventAccumulator(str(events))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "train/loss" in tags and "eval/loss" in tags
    assert not any("cm_" in t for t in tags), tags
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 2.0), (2, 1.5)]
