"""A TrainerCallback that turns training progress into events and obeys stop requests."""

from __future__ import annotations

import contextlib
import errno
import math
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from transformers import TrainerCallback

from tunewire_server.checkpoints import mark_complete, step_of, unmark
from tunewire_server.protocol import CheckpointSaved, ConfusionMatrix, EvalResult, TrainingStopped, TrainLog
from tunewire_server.worker.protocol import MessageWriter
from tunewire_server.worker.runtime import UserError
from tunewire_server.worker.training.failures import nearly_full

# Keys Trainer logs that have a field of their own in TrainLog.
_OWN_FIELDS = {"loss", "learning_rate", "grad_norm", "epoch", "num_tokens", "mean_token_accuracy"}
# A classifier's compute_metrics reports its confusion matrix as cm_<true index>_<predicted index> counts.
_CONFUSION = re.compile(r"eval_cm_(\d+)_(\d+)")


class Control:
    """Flags set by signal handlers and read by the callback at step boundaries; the NaN-loss watch."""

    def __init__(self) -> None:
        self.stop = False  # cancel: stop at the next step, keep nothing
        self.checkpoint_and_stop = False  # shutdown: save a checkpoint, then stop
        self.training = False
        self.checkpoint_key: bytes | None = None
        self.uploader = None  # worker/training/shared.Uploader when the job has a shared artifact store
        self.nan_loss_steps = 3
        self._bad_losses = 0
        # What the job is doing, for classing a failure (worker/failures.py): set by the runners and the
        # trainer hooks below, and left as it was when an exception escapes.
        self.phase = "prepare"
        self.field = ""  # the spec field the phase works on (a dataset's), where there is one
        # Callbacks every guarded Trainer gets (set by run_job from the plan): early stopping (the plan's
        # early_stopping entry: patience, threshold) and TensorBoard event files into this folder.
        self.early_stopping: dict | None = None
        self.tensorboard_dir: Path | None = None
        self.early_stopper = None  # the EarlyStoppingCallback added, read when training ends

    def trainer_callbacks(self) -> list:
        """The callbacks to add to the job's Trainer: transformers' EarlyStoppingCallback, TensorBoard's."""
        from transformers import EarlyStoppingCallback

        from tunewire_server.worker.training.tb_events import tensorboard_callback

        callbacks = []
        self.early_stopper = None
        if self.early_stopping:
            self.early_stopper = EarlyStoppingCallback(
                early_stopping_patience=self.early_stopping["patience"],
                early_stopping_threshold=self.early_stopping["threshold"])
            callbacks.append(self.early_stopper)
        if self.tensorboard_dir is not None and (board := tensorboard_callback(self.tensorboard_dir)) is not None:
            callbacks.append(board)
        return callbacks

    def enter(self, phase: str, field: str = "") -> None:
        self.phase = phase
        self.field = field

    @contextlib.contextmanager
    def phase_of(self, phase: str) -> Iterator[None]:
        """`phase` for the block, then the phase before it; not after an exception, which belongs to `phase`."""
        before = self.phase, self.field
        self.enter(phase)
        yield
        self.phase, self.field = before

    def agree(self) -> tuple[bool, bool]:
        """(stop, checkpoint_and_stop) as every rank of a multi-process run sees them: a request seen by any
        rank holds for all, so all stop at the same step (ranks that disagreed would wait forever in DDP's
        next all-reduce). The flags are only ever raised here, never lowered: a signal may land meanwhile."""
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return self.stop, self.checkpoint_and_stop
        device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
        flags = torch.tensor([self.stop, self.checkpoint_and_stop], dtype=torch.int32, device=device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        stop, checkpoint = (bool(v) for v in flags.tolist())
        if stop:
            self.stop = True
        if checkpoint:
            self.checkpoint_and_stop = True
        return stop, checkpoint

    def wait_for_ranks(self) -> None:
        """In a multi-process run, return once every rank has got here (a no-op in a one-process run)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.barrier()

    def observe_loss(self, loss: float) -> None:
        """Fail the job once the loss has been NaN or infinite nan_loss_steps steps in a row."""
        if math.isfinite(loss):
            self._bad_losses = 0
            return
        self._bad_losses += 1
        if self._bad_losses >= self.nan_loss_steps:
            raise UserError("NAN_LOSS", f"the loss was {loss} for {self._bad_losses} steps in a row; "
                            "try a lower learning_rate or check the data and the base model", "")


def guarded(trainer_cls: type, control: Control) -> type:
    """A subclass of a Trainer class whose every training step reports its loss to `control`, and that
    tells `control` when it loads a checkpoint ("resume"), trains ("train") or saves one ("save")."""

    class Guarded(trainer_cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            for callback in control.trainer_callbacks():
                self.add_callback(callback)

        def train(self, *args, **kwargs):
            control.enter("train")
            return super().train(*args, **kwargs)

        # Only the checkpoint's own loads are "resume": a failure there falls back to the checkpoint before,
        # while one anywhere else in train() (the dataloader, the optimizer's set-up) is no fault of it.
        def _load_from_checkpoint(self, *args, **kwargs):
            with control.phase_of("resume"):
                return super()._load_from_checkpoint(*args, **kwargs)

        def _load_optimizer_and_scheduler(self, *args, **kwargs):
            with control.phase_of("resume"):
                return super()._load_optimizer_and_scheduler(*args, **kwargs)

        def _load_rng_state(self, *args, **kwargs):  # at the first epoch's start, after on_train_begin
            with control.phase_of("resume"):
                return super()._load_rng_state(*args, **kwargs)

        def training_step(self, *args, **kwargs):
            control.enter("train")
            loss = super().training_step(*args, **kwargs)
            control.observe_loss(float(loss))
            return loss

        def _save_checkpoint(self, model, trial, *args, **kwargs):
            control.enter("save")
            if control.uploader is not None:  # the last checkpoint's upload ends before rotation may delete it
                control.uploader.wait()
            folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
            if self.args.should_save:
                unmark(folder)  # a folder rewritten at the same step (after a fallback) is not complete until marked
            try:
                super()._save_checkpoint(model, trial, *args, **kwargs)
            except Exception as exc:
                full = nearly_full(folder)
                if self.args.should_save:  # never taken for complete (no marker); its space is wanted back
                    shutil.rmtree(folder, ignore_errors=True)
                if full and not isinstance(exc, OSError):
                    raise OSError(errno.ENOSPC, "No space left on device while saving a checkpoint") from exc
                raise
            control.enter("train")

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{trainer_cls.__name__}"
    return Guarded


class EventCallback(TrainerCallback):
    def __init__(self, out: MessageWriter, control: Control) -> None:
        self.out = out
        self.flags = control
        self._start = 0.0
        self._start_step = 0
        self._last_tokens: tuple[float, float] | None = None  # (time, num_tokens)
        self.last_eval: dict[str, float] = {}  # the final model's metrics: the job's, once it succeeds
        self._evals: dict[int, dict[str, float]] = {}  # each evaluation's, by step

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.monotonic()
        self._start_step = state.global_step
        self.flags.training = True
        self.flags.enter("train")  # the checkpoint's weights, optimizer and scheduler are loaded by now

    def on_step_end(self, args, state, control, **kwargs):
        stop, checkpoint = self.flags.agree()
        if stop:
            control.should_training_stop = True
        elif checkpoint:
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if any(k.startswith("eval_") for k in logs):
            return  # on_evaluate reports these
        max_steps = max(state.max_steps or 0, 1)
        progress = min(state.global_step / max_steps, 1.0)
        event: dict = {
            "step": state.global_step,
            "max_steps": state.max_steps,
            "epoch": float(state.epoch or 0.0),
            "progress": progress,
        }
        for key in ("loss", "learning_rate", "grad_norm", "num_tokens", "mean_token_accuracy"):
            if isinstance(logs.get(key), (int, float)):
                event[key] = float(logs[key])
        done = state.global_step - self._start_step
        elapsed = time.monotonic() - self._start
        if done > 0 and progress < 1.0:
            event["eta_seconds"] = elapsed / done * (state.max_steps - state.global_step)
        if "num_tokens" in event:
            now = time.monotonic()
            if self._last_tokens is not None and now > self._last_tokens[0]:
                event["tokens_per_second"] = (event["num_tokens"] - self._last_tokens[1]) / (now - self._last_tokens[0])
            elif elapsed > 0:
                event["tokens_per_second"] = event["num_tokens"] / elapsed
            self._last_tokens = (now, event["num_tokens"])
        event["extra"] = {k: float(v) for k, v in logs.items()
                          if k not in _OWN_FIELDS and isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.out.send(TrainLog(**event))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        clean = {}
        cells: dict[tuple[int, int], float] = {}
        for key, value in (metrics or {}).items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if cell := _CONFUSION.fullmatch(key):  # lifted out of the metrics into the matrix
                cells[int(cell[1]), int(cell[2])] = float(value)
            else:
                clean[key.removeprefix("eval_")] = float(value)
        self.last_eval = self._evals[state.global_step] = {k: v for k, v in clean.items() if math.isfinite(v)}
        matrix = confusion_matrix(cells, kwargs.get("model")) if cells else None
        self.out.send(EvalResult(state.global_step, float(state.epoch or 0.0), clean, matrix))

    def on_train_end(self, args, state, control, **kwargs):
        """Say when and why training stopped and which step's weights the final model holds. Not for a
        cancel or a shutdown's stop: that training has not ended, it was interrupted."""
        if self.flags.stop or self.flags.checkpoint_and_stop:
            return
        event = training_stopped(args, state, self.flags.early_stopper)
        if event.kept_step in self._evals:  # the best checkpoint became the final model: its metrics are the job's
            self.last_eval = self._evals[event.kept_step]
        self.out.send(event)

    def on_save(self, args, state, control, **kwargs):
        self.flags.enter("save")
        self.flags.wait_for_ranks()  # each rank writes its own part (its RNG state): all before the marker
        if not state.is_world_process_zero:
            self.flags.enter("train")
            return
        name = f"checkpoint-{state.global_step}"
        folder = Path(args.output_dir) / name
        if self.flags.checkpoint_key is not None and folder.is_dir():
            mark_complete(folder, state.global_step, self.flags.checkpoint_key)
            if self.flags.uploader is not None:  # into the shared store, in the background (shared.py)
                self.flags.uploader.checkpoint(folder)
        self.flags.enter("train")
        self.out.send(CheckpointSaved(state.global_step, name))


def confusion_matrix(cells: dict[tuple[int, int], float], model) -> ConfusionMatrix:
    """The matrix of (true, predicted) index -> count cells, labelled by the model's id2label in index order
    (the index itself where the model has no name for it)."""
    n = max(max(i, j) for i, j in cells) + 1
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    names = {int(k): str(v) for k, v in id2label.items()}
    n = max(n, len(names))
    labels = [names.get(i, str(i)) for i in range(n)]
    counts = [round(c) if math.isfinite(c := cells.get((i, j), 0.0)) and c > 0 else 0
              for i in range(n) for j in range(n)]
    return ConfusionMatrix(labels, counts)


def training_stopped(args, state, early_stopper) -> TrainingStopped:
    """The TrainingStopped event for a training run that has ended (Trainer's on_train_end: the best model,
    with load_best_model_at_end, is loaded by then)."""
    step, max_steps = state.global_step, state.max_steps
    metric = (args.metric_for_best_model or "").removeprefix("eval_")
    stopped_early = (early_stopper is not None and step < max_steps
                     and early_stopper.early_stopping_patience_counter >= early_stopper.early_stopping_patience)
    if stopped_early:
        reason = (f"eval {metric} did not improve by more than {early_stopper.early_stopping_threshold:g} for "
                  f"{early_stopper.early_stopping_patience} evaluation"
                  f"{'s' if early_stopper.early_stopping_patience != 1 else ''} in a row")
    else:
        reason = f"training reached its last step ({step} of {max_steps})"
    kept = step
    if args.load_best_model_at_end and state.best_model_checkpoint:
        best = step_of(Path(state.best_model_checkpoint))
        kept = best if best is not None else (state.best_global_step or step)
    best_value = float(state.best_metric) if state.best_metric is not None and metric else None
    return TrainingStopped(step=step, max_steps=max_steps, stopped_early=stopped_early, reason=reason,
                           kept_step=kept, metric=metric, best_value=best_value)
