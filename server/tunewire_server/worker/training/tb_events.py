"""TensorBoard event files in the job's folder (layout.TENSORBOARD_DIR), so `tensorboard --logdir` opens a
job's loss and metric curves.

transformers' own TensorBoardCallback writes them (through torch.utils.tensorboard, which needs the
`tensorboard` package), pointed at the job's folder instead of its default output_dir/runs/<time>; the
confusion-matrix counts (eval_cm_<i>_<j>) are left out, one scalar chart per cell would only be noise.
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers.integrations import TensorBoardCallback, is_tensorboard_available

CONFUSION_PREFIX = "eval_cm_"

log = logging.getLogger("tunewire.worker")


class JobTensorBoard(TensorBoardCallback):
    """TensorBoardCallback writing into `folder` (only the main process of a run writes)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.logging_dir = str(folder)  # read by on_train_begin; the environment's TENSORBOARD_LOGGING_DIR is not

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = {k: v for k, v in (logs or {}).items() if not k.startswith(CONFUSION_PREFIX)}
        return super().on_log(args, state, control, logs=logs, **kwargs)


def tensorboard_callback(folder: Path) -> JobTensorBoard | None:
    """The callback, or None (logged) where neither tensorboard nor tensorboardX is installed: the job
    trains all the same, without event files."""
    if not is_tensorboard_available():
        log.warning("tensorboard is not installed: no TensorBoard event files for this job")
        return None
    return JobTensorBoard(folder)
