"""Entry point of a training worker: one job per process.

Heavy libraries are imported before the job is read from stdin, so a worker started ahead of time
(warm) has paid the import cost when the job arrives. Messages go up the --message-fd pipe.

A job that resolves to more than one training process is run by the worker through `accelerate launch`
(worker/training/launcher.py): each rank is this module again, started with --rank-of RUN_DIR, and runs the job
as a one-process worker would.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from tunewire_server.layout import CHECKPOINTS_DIR
from tunewire_server.protocol import ErrorMessage, JobRequest, ProtocolError, Ready, Result, decode
from tunewire_server.worker.protocol import MessageWriter, die_with_parent, parse_args

TRAINING_NICENESS = 10


class Cancelled(BaseException):
    """Raised by the stop signal before training has started: nothing is written yet."""


_ending = False  # set once Cancelled was raised or the job is over: later signals change nothing


def _cancel() -> None:
    """Called from a signal handler before training starts. Raises once: a second signal (a cancel, then
    the server's shutdown) must not interrupt the unwinding or the exit with another Cancelled."""
    global _ending
    if not _ending:
        _ending = True
        raise Cancelled()


def main() -> int:
    global _ending
    args = parse_args(ranks=True)
    die_with_parent()
    _lower_priority()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from tunewire_server.protocol import CHECKPOINT_SIGNAL, STOP_SIGNAL

    rank = None
    try:
        if args.rank_of:
            from tunewire_server.worker.training.launcher import Rank

            rank = Rank(args.rank_of)

            def not_started(signum, frame):
                _cancel()

            # A rank spends seconds importing before it has a Control: a stop meanwhile ends it at once.
            signal.signal(STOP_SIGNAL, not_started)
            signal.signal(CHECKPOINT_SIGNAL, not_started)
            rank.announce({STOP_SIGNAL: not_started, CHECKPOINT_SIGNAL: not_started})
            out = rank.writer()
        else:
            out = MessageWriter(args.message_fd)

        from tunewire_server.worker.training.callback import Control

        control = Control()

        def on_stop(signum, frame):
            control.stop = True
            if not control.training:
                _cancel()

        def on_checkpoint(signum, frame):
            control.checkpoint_and_stop = True
            if not control.training:
                _cancel()

        signal.signal(STOP_SIGNAL, on_stop)
        signal.signal(CHECKPOINT_SIGNAL, on_checkpoint)
        code = _run(out, control, rank)
        _ending = True
    except Cancelled:
        code = 0
    # Everything the job wrote is on disk and its result is in the pipe: the manager waits for this exit.
    _exit_now(code)
    return code


def _lower_priority() -> None:
    """Training may take every core; the control plane must still answer at once (health, GetJob,
    streams). Under autogroup scheduling (kernel.sched_autogroup_enabled, on in most kernels) niceness
    ranks processes only within one session, and each session's group gets an equal share: the worker
    leads its own session, so that group is lowered as well."""
    niceness = int(os.environ.get("TUNEWIRE_TRAINING_NICENESS", TRAINING_NICENESS))
    if niceness <= 0:
        return
    current = os.nice(0)  # a DDP rank inherits its worker's: the setting is absolute, not added again
    if niceness > current:
        os.nice(niceness - current)
    try:  # a rank leads a session of its own too
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(niceness))
    except OSError:  # no autogroup support (or not Linux): niceness alone applies
        pass


def _exit_now(code: int) -> None:
    """End the worker (or a rank) without the interpreter's teardown of torch, transformers and datasets,
    which takes seconds that every job's end and every cancel would wait for. What it wrote is flushed
    first; the final model was fsynced and renamed into place before the result was sent."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _read_job_line() -> str:
    """The job request from stdin. Waits in slices: the kernel may hand a stop signal to one of the threads
    torch started, which does not interrupt a blocking read, but its handler runs at the next slice."""
    import select

    while not select.select([sys.stdin], [], [], 0.25)[0]:
        pass
    return sys.stdin.readline()


def _run(out: MessageWriter, control, rank=None) -> int:
    import torch  # noqa: F401  (the import cost is paid here, before a job arrives)

    from tunewire_server.worker.runtime import configure_torch
    from tunewire_server.worker.training import classification, sft

    runners = {"classification": classification.run, "sft": sft.run}
    if rank is not None:
        request = rank.request()
        log = logging.getLogger("tunewire.worker")
        log.info("rank %d of %d started (pid %d)", rank.rank, rank.world_size, os.getpid())
    else:
        _prepare_for_first_step()
        out.send(Ready())  # signal handlers are installed and the heavy imports are done
        line = _read_job_line()
        if not line:
            return 0  # the control plane closed us without a job
        request = decode(line)
        if not isinstance(request, JobRequest):
            raise ProtocolError(f"expected the job request, got a {request.KIND} message")
        _redirect_output(request.log_path)
        if not _fetch_shared(request, out):
            return 1
        from tunewire_server.worker.training.launcher import resolve_processes, run_distributed

        processes = resolve_processes(request.train_processes)
        if processes > 1:
            return run_distributed(request, processes, out, control)
    configure_torch()
    code, metrics = run_job(request, out, control, runners)
    if code != 0:
        return code
    if rank is not None:
        _log_rank(rank)
    if control.stop or control.checkpoint_and_stop:
        return 0
    out.send(Result(metrics))
    return 0


def run_job(request: JobRequest, out, control, runners: dict) -> tuple[int, dict]:
    """Run one job's task in this process: (exit code, metrics). Resumes from the newest checkpoint that
    verifies (checkpoints.py); one that then fails to load is unmarked and the one before it is tried, down
    to a start from step 0. A failure is reported as one error message, classed by worker/failures.py; its
    full traceback (bounded lines, no local variables) goes to the job's log only."""
    from pathlib import Path

    from google.protobuf import json_format

    from tunewire.v1 import job_pb2
    from tunewire_server.checkpoints import complete_checkpoints, unmark
    from tunewire_server.worker.training.failures import classify, format_traceback

    log = logging.getLogger("tunewire.worker")
    spec = json_format.ParseDict(request.spec, job_pb2.JobSpec())
    plan = request.plan
    job_dir = Path(request.job_dir)
    control.checkpoint_key = bytes.fromhex(request.checkpoint_key)
    control.nan_loss_steps = request.nan_loss_steps
    control.uploader = _uploader(request)
    checkpoints = job_dir / CHECKPOINTS_DIR
    candidates = complete_checkpoints(checkpoints, control.checkpoint_key)
    resume = next(candidates, None)
    if resume is None and checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*")):
        log.warning("job %s: no checkpoint verifies: starting from step 0", request.job_id)
    allowed = _names(request.spec, plan)
    while True:
        log.info("job %s: %s on %s%s", request.job_id, plan["task"], plan["base_model"],
                 f", resuming from {resume.name}" if resume else "")
        control.enter("prepare")
        try:
            seed_everything(spec, plan)  # each attempt starts from the same random state
            configure_callbacks(control, spec, plan, job_dir)
            metrics = runners[plan["task"]](spec, plan, job_dir, out, control, str(resume) if resume else None)
            _finish_uploads(control, job_dir)
            return 0, metrics
        except Exception as exc:
            phase = control.phase
            log.error("job %s failed (phase %s):\n%s", request.job_id, phase, format_traceback(exc))
            error = classify(exc, phase, field=control.field, save_dir=job_dir, allowed=allowed)
        if (resume is not None and phase == "resume" and error.kind == "SYSTEM"
                and error.code not in ("OUT_OF_MEMORY", "DISK_FULL", "DEVICE_ERROR")):
            failed, resume = resume, next(candidates, None)
            unmark(failed)  # never tried again, by this attempt or a later one
            _forget_stored(control, request.job_id, failed.name)
            log.warning("job %s: %s failed to load (%s): %s", request.job_id, failed.name, error.message,
                        f"falling back to {resume.name}" if resume else "no checkpoint left: starting from step 0")
            continue
        out.send(ErrorMessage(error))
        return 1, {}


def seed_everything(spec, plan: dict) -> int:
    """Seed Python's, numpy's and torch's generators with the job's seed before anything random happens:
    the classification head's initialisation (before the Trainer, which seeds only in its constructor),
    the data's shuffles and dropout. The seed is the plan's (drawn at submission when the spec set none).
    cuDNN is kept to its deterministic kernels; torch.use_deterministic_algorithms is not turned on, as
    it raises for the operations that have no deterministic CUDA kernel. Returns the seed."""
    import torch
    from transformers import set_seed

    from tunewire_server import hyperparameters as definition

    seed = int(definition.resolve_plan(spec, plan)["hyperparameters"]["seed"])
    set_seed(seed)
    if torch.cuda.is_available():
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return seed


def configure_callbacks(control, spec, plan: dict, job_dir) -> None:
    """What the job's Trainer gets beside the event callback (callback.Control.trainer_callbacks): early
    stopping as the plan says, TensorBoard event files into the job's folder."""
    from tunewire_server import hyperparameters as definition
    from tunewire_server.layout import TENSORBOARD_DIR

    control.early_stopping = definition.resolve_plan(spec, plan)["hyperparameters"].get("early_stopping")
    control.tensorboard_dir = job_dir / TENSORBOARD_DIR


def _fetch_shared(request: JobRequest, out) -> bool:
    """With a shared artifact store: fetch the job's uploaded datasets this replica lacks, and its newest
    stored checkpoint when the local job folder has no complete one as new (a job resumed on another
    replica). False once an error was reported. Runs once per job, before any rank starts."""
    from pathlib import Path

    from tunewire_server.artifacts import ArtifactCorrupt
    from tunewire_server.protocol import JobError
    from tunewire_server.shared_store import open_shared
    from tunewire_server.worker.training.failures import classify
    from tunewire_server.worker.training.shared import fetch_datasets, fetch_newer_checkpoint

    log = logging.getLogger("tunewire.worker")
    phase = "data"
    try:
        store = open_shared(request)
        if store is None:
            return True
        missing = fetch_datasets(store, request.spec, request.plan)
        if missing:
            out.send(ErrorMessage(JobError(
                "DATASET_UNAVAILABLE", "USER", "the uploaded dataset was deleted before the job could read it",
                f"{missing[0]}.uploaded.dataset_id")))
            return False
        phase = "resume"
        fetch_newer_checkpoint(store, request.job_id, Path(request.job_dir) / CHECKPOINTS_DIR,
                               bytes.fromhex(request.checkpoint_key))
    except ArtifactCorrupt as exc:
        if phase == "data":
            out.send(ErrorMessage(classify(exc, phase)))
            return False
        # that stored checkpoint is unusable: resume from what is local, as without a store
        log.warning("job %s: the stored checkpoint is corrupt (%s): not fetched", request.job_id, exc)
    except Exception as exc:
        log.error("job %s: fetching from the artifact store failed: %s", request.job_id, exc)
        out.send(ErrorMessage(classify(exc, phase)))
        return False
    return True


def _uploader(request: JobRequest):
    """The job's Uploader (worker/training/shared.py), or None without a shared store. Only the main
    process (rank 0) of a multi-process run uploads."""
    from tunewire_server.shared_store import open_shared
    from tunewire_server.worker.training.shared import Uploader

    if os.environ.get("RANK", "0") != "0":
        return None
    store = open_shared(request)
    return Uploader(store, request.job_id) if store is not None else None


def _forget_stored(control, job_id: str, name: str) -> None:
    """A checkpoint that failed to load is removed from the shared store too, or the next attempt would
    fetch it again."""
    if control.uploader is None:
        return
    from tunewire_server.shared_store import checkpoint_key

    try:
        control.uploader.store.delete_prefix(checkpoint_key(job_id, name))
    except Exception as exc:  # the next attempt then fetches it, fails to load it and falls back again
        logging.getLogger("tunewire.worker").warning("job %s: could not remove %s from the artifact store: %s",
                                                     job_id, name, exc)


def _finish_uploads(control, job_dir) -> None:
    """Before the worker reports its result: every checkpoint upload ended, then the final model stored.
    A shutdown's checkpoint is waited for too (another replica resumes from it); a cancel's uploads are not."""
    from tunewire_server.layout import MODEL_DIR

    if control.uploader is None or control.stop:
        return
    control.enter("save")
    control.uploader.wait()
    if not control.checkpoint_and_stop:
        control.uploader.model(job_dir / MODEL_DIR)


def _names(spec: dict, plan: dict) -> set[str]:
    """Strings an error message may quote: the spec's and the plan's own values (field and column names,
    paths, label names), never inline rows."""
    names: set[str] = set()

    def walk(value, key: str = "") -> None:
        if key in ("inline", "rows"):
            return
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and len(value) <= 1000:
            names.add(value)

    walk(spec)
    walk(plan)  # the model's and datasets' resolved paths, the label names
    return names


def _prepare_for_first_step() -> None:
    """Work every job would otherwise pay between its arrival and its first step, done while the worker
    waits: lazily built tables and lazily imported modules, then a full collection whose survivors (the
    imported libraries) are frozen out of later collections."""
    import contextlib
    import gc

    import sklearn.metrics  # noqa: F401  (classification_metrics.py computes with it)

    with contextlib.suppress(ImportError):  # the job's TensorBoard writer (worker/training/tb_events.py)
        import torch.utils.tensorboard  # noqa: F401

    # Built on the first from_pretrained of any model. A private helper: a transformers without it, or
    # where it changed, simply builds the table later.
    with contextlib.suppress(Exception):
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping

        get_checkpoint_conversion_mapping("bert")
    gc.collect()
    gc.freeze()


def _log_rank(rank) -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        logging.getLogger("tunewire.worker").info(
            "rank %d of %d finished: torch.distributed backend %s, world size %d", rank.rank, rank.world_size,
            dist.get_backend(), dist.get_world_size())


def _redirect_output(log_path: str) -> None:
    """A warm worker was started before its job was known: from here on, log into the job's folder."""
    # A job resumed on a replica that has never seen it (shared artifact store) has no job folder there yet.
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
