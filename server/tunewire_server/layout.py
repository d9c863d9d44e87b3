"""The names inside a job's folder (jobs_dir/<job id>/), shared by the control plane and the worker.

Torch-free and import-free: the control plane reads these without importing any worker code.
"""

from __future__ import annotations

MODEL_DIR = "model"  # the finished model; present only once complete (renamed into place)
PARTIAL_MODEL_DIR = MODEL_DIR + ".partial"  # the model being written; removed if the job is cancelled
META_FILE = "tunewire.json"  # inside the model folder: what the inference worker needs to load it
CHECKPOINTS_DIR = "checkpoints"  # the Trainer's checkpoints, the newest complete one resumed after a retry
RUN_DIR = "ranks"  # a multi-process run's working files (request, message FIFO, pids); removed when it ends
PLAN_FILE = "plan.json"  # the plan of a job stored before plans were kept in the store
WORKER_LOG = "worker.log"  # the training worker's output
TENSORBOARD_DIR = "tensorboard"  # TensorBoard event files of the training run (kept with the job, deleted with it)
WORKER_PID = "worker.pid"  # the running worker's pid: a restarted server ends an orphan with it
