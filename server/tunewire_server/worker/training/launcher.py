"""Multi-process (DDP) training: a job's worker becomes the parent of an `accelerate launch` run.

    control plane
      └─ worker (its own process group, which the control plane signals; dies with the control plane)
           └─ launcher: `accelerate launch` (torch.distributed.run), in a session of its own; dies with the worker
                └─ rank 0..N-1: `python -m tunewire_server.worker.training.main --rank-of RUN_DIR`, each in a
                   session of its own (torch.distributed.run starts them so); each dies with the launcher

Each rank runs the job as a one-process worker would (any runner: classification, SFT), with these
differences, all through the run folder RUN_DIR (job_dir/ranks, 0700, removed when the run ends):

- The job request comes from RUN_DIR/request.json (0600: it holds the checkpoint key).
- torch.distributed.run closes inherited descriptors, so rank 0 writes its messages into the FIFO
  RUN_DIR/messages and the worker forwards each line to the control plane unchanged. The other ranks
  send nothing, so every metric arrives once; their errors land in RUN_DIR/error.<rank>.json and are
  reported only when rank 0 reported none. A rank that dies without a word (a signal, the OOM killer)
  is named from the launcher's failure report (RUN_DIR/failures.json).
- The control plane's signals reach the worker only. The worker records each in RUN_DIR/signal.<n>,
  then sends it to every rank whose pid file (RUN_DIR/pid.<rank>, written once the rank's handlers are
  in place) exists; a rank that writes its pid file later finds the signal file and acts on it then.
  The ranks agree on stopping at each step's end (Control.agree), so all stop at the same step.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace
from pathlib import Path

from tunewire_server.protocol import (
    CHECKPOINT_SIGNAL,
    STOP_SIGNAL,
    ErrorMessage,
    JobRequest,
    ProtocolError,
    decode,
    encode,
)
from tunewire_server.worker.protocol import ErrorOnlyWriter, MessageWriter, die_with_parent
from tunewire_server.worker.training import failures
from tunewire_server.worker.training.artifacts import RUN_DIR

log = logging.getLogger("tunewire.worker")

REQUEST_FILE = "request.json"
FIFO = "messages"
FAILURES_FILE = "failures.json"
PARENT_ENV = "TUNEWIRE_LAUNCHER_PARENT"
RANK_MODULE = "tunewire_server.worker.training.main"
# A cancelled run keeps nothing: ranks that have not stopped this long after a cancel (a slow step, or a
# rank stuck in a collective because a peer already left) are killed, well before the control plane's
# cancel grace would take the whole worker down.
CANCEL_KILL_AFTER_S = 5.0



def resolve_processes(setting: int | None) -> int:
    """The `train_processes` setting as a count: 0 = one per visible GPU (1 on a CPU)."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not setting or setting < 1:
        return max(gpus, 1)
    if gpus and setting > gpus:
        log.warning("train_processes=%d but %d GPUs are visible: using %d processes", setting, gpus, gpus)
        return gpus
    return setting


def _write_private(path: Path, text: str) -> None:
    """Write a file only this user can read, whole: readers see it complete or not at all."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.rename(tmp, path)


def _start_time(pid: int) -> str | None:
    """A process's start time (clock ticks since boot): with the pid, it names one process, not a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


# --- the worker's side -------------------------------------------------------------------------


class Launch:
    """Run one job's ranks under `accelerate launch`, forward rank 0's messages and the control plane's
    signals, and report the outcome as a one-process worker would (messages and exit code)."""

    def __init__(self, request: JobRequest, processes: int, out: MessageWriter, control) -> None:
        self.request = request
        self.processes = processes
        self.out = out
        self.control = control
        self.dir = Path(request.job_dir) / RUN_DIR
        self.proc: subprocess.Popen | None = None
        self.rank0_error: ErrorMessage | None = None
        self._buffer = b""
        self._cancelled_at: float | None = None

    def run(self) -> int:
        shutil.rmtree(self.dir, ignore_errors=True)  # a run killed with its server leaves one behind
        self.dir.mkdir(parents=True)
        os.chmod(self.dir, 0o700)
        for sig in (STOP_SIGNAL, CHECKPOINT_SIGNAL):  # kept to the end: this worker exits after the run
            signal.signal(sig, self._on_signal)
        fifo = None
        try:
            _write_private(self.dir / REQUEST_FILE, encode(self.request))
            os.mkfifo(self.dir / FIFO, 0o600)
            fifo = os.open(self.dir / FIFO, os.O_RDWR | os.O_NONBLOCK)  # read-write: never EOF while ranks start
            command = self._command()
            log.info("job %s: %d training processes: %s", self.request.job_id, self.processes,
                     " ".join(command[3:]))
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, env=self._env(), start_new_session=True)
            self._pump(fifo)
            return self._outcome()
        finally:
            if self.proc is not None and self.proc.poll() is None:  # the worker itself failed: take all down
                self._kill_ranks(signal.SIGKILL)
                with suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            if fifo is not None:
                os.close(fifo)
            shutil.rmtree(self.dir, ignore_errors=True)

    def _command(self) -> list[str]:
        accelerate_args = [
            "--multi_gpu",  # the torch.distributed.run launcher; with ACCELERATE_USE_CPU the ranks use gloo
            "--num_processes", str(self.processes), "--num_machines", "1", "--gpu_ids", "all",
            "--mixed_precision", "no",  # TrainingArguments sets the job's own precision
            "--dynamo_backend", "no", "--main_process_port", "0", "--max_restarts", "0",
            "--monitor_interval", "0.1", "--log_dir", str(self.dir / "elastic"),
            "--module", RANK_MODULE, "--rank-of", str(self.dir),
        ]
        return [sys.executable, "-m", "tunewire_server.worker.training.launcher", str(self.dir), *accelerate_args]

    def _env(self) -> dict[str, str]:
        import torch

        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        if not torch.cuda.is_available():
            # accelerate 1.15's `--cpu` always takes its one-process launcher (several only through mpirun),
            # so a CPU run takes the multi-GPU launcher with this set: the ranks then form a gloo group
            # (without it, ranks with no GPU would each train alone).
            env["ACCELERATE_USE_CPU"] = "true"
        return env

    # signals

    def _on_signal(self, signum, frame) -> None:
        if signum == STOP_SIGNAL:
            self.control.stop = True
            if self._cancelled_at is None:
                self._cancelled_at = time.monotonic()
        else:
            self.control.checkpoint_and_stop = True
        with suppress(OSError):  # first the file, then the pids: a rank is reached one way or the other
            _write_private(self.dir / f"signal.{int(signum)}", "")
        self._kill_ranks(signum)

    def _rank_pids(self) -> list[int]:
        pids = []
        for path in self.dir.glob("pid.*"):
            with suppress(OSError, ValueError):
                pid, started = path.read_text().split()
                if _start_time(int(pid)) == started:
                    pids.append(int(pid))
        return pids

    def _kill_ranks(self, signum: int) -> None:
        for pid in self._rank_pids():
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    # messages

    def _pump(self, fifo: int) -> None:
        assert self.proc is not None
        while True:
            readable, _, _ = select.select([fifo], [], [], 0.2)
            if readable:
                self._read(fifo)
            if self.proc.poll() is not None:
                self._read(fifo)
                return
            if self._cancelled_at is not None and time.monotonic() - self._cancelled_at > CANCEL_KILL_AFTER_S:
                log.warning("the ranks did not stop within %.0f s of a cancel: killing them", CANCEL_KILL_AFTER_S)
                self._cancelled_at = float("inf")
                self._kill_ranks(signal.SIGKILL)
                with suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)

    def _read(self, fifo: int) -> None:
        while True:
            try:
                chunk = os.read(fifo, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                return
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\n")
            for line in lines:
                self._forward(line.decode("utf-8", "replace"))

    def _forward(self, line: str) -> None:
        try:
            message = decode(line)
        except ProtocolError:
            return  # a torn line from a rank that died mid-write
        if isinstance(message, ErrorMessage):
            self.rank0_error = message  # reported once the run is over, and then only if it is the cause
            return
        self.out.send_line(line)  # as it came

    # outcome

    def _outcome(self) -> int:
        assert self.proc is not None
        code = self.proc.returncode
        stopping = self.control.stop or self.control.checkpoint_and_stop
        failures = self._failures()
        killed = [f for f in failures if f["rank"] != 0 and f.get("signal")]
        reported = self.rank0_error or self._other_rank_error()
        if reported is not None:
            error = reported.error
            if stopping and error.kind == "SYSTEM":
                # When one rank stops before the others have started training, the others fail in their
                # next collective: that is the stop, not a fault.
                log.warning("a rank failed while the run was stopping: %s", error.message)
                return 0
            if error.kind == "SYSTEM" and killed:
                # Rank 0's error (a collective that lost its peer) follows from another rank's death: name that.
                self._send_crash(f"{self._crash_message(code, failures)}; then {error.message}")
                return 1
            self.out.send(reported)
            return 1
        if code == 0 or stopping:
            return 0
        self._send_crash(self._crash_message(code, failures))
        return 1

    def _send_crash(self, message: str) -> None:
        self.out.send(ErrorMessage(failures.error("WORKER_CRASHED", "SYSTEM", message)))

    def _failures(self) -> list[dict]:
        try:
            failures = json.loads((self.dir / FAILURES_FILE).read_text())
        except (OSError, ValueError):
            return []
        return sorted(failures, key=lambda f: (not f.get("signal"), f.get("time", 0), f["rank"]))  # causes first

    def _other_rank_error(self) -> ErrorMessage | None:
        for rank in range(1, self.processes):
            path = self.dir / f"error.{rank}.json"
            with suppress(OSError, ValueError):  # ProtocolError is a ValueError
                message = decode(path.read_text())
                if isinstance(message, ErrorMessage):
                    error = replace(message.error, message=failures.bound(f"(rank {rank}) {message.error.message}"))
                    return replace(message, error=error)
        return None

    def _crash_message(self, code: int, failures: list[dict]) -> str:
        n = self.processes
        if failures:
            parts = []
            for f in failures:
                how = f"was killed by {f['signal']}" if f.get("signal") else f"exited with code {f['exitcode']}"
                parts.append(f"training process rank {f['rank']} of {n} {how}")
            return "; ".join(parts)
        if code < 0:
            with suppress(ValueError):
                return f"the training launcher ({n} processes) was killed by {signal.Signals(-code).name}"
        return f"the training launcher ({n} processes) exited with code {code} without a result"


def run_distributed(request: JobRequest, processes: int, out: MessageWriter, control) -> int:
    return Launch(request, processes, out, control).run()


# --- a rank's side -----------------------------------------------------------------------------


class Rank:
    """One rank of a multi-process run, as torch.distributed.run describes it in the environment."""

    def __init__(self, run_dir: str) -> None:
        self.dir = Path(run_dir)
        self.rank = int(os.environ.get("RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))

    def writer(self) -> MessageWriter | ErrorOnlyWriter:
        if self.rank == 0:
            return MessageWriter(os.open(self.dir / FIFO, os.O_WRONLY))
        return ErrorOnlyWriter(self.dir / f"error.{self.rank}.json")

    def announce(self, handlers: dict[int, Callable]) -> None:
        """Call once this rank's signal handlers are installed: the worker forwards signals from now on,
        and one it got before is acted on here (a handler may raise, as a signal's would)."""
        pid = os.getpid()
        _write_private(self.dir / f"pid.{self.rank}", f"{pid} {_start_time(pid)}")
        for signum, handler in handlers.items():
            if (self.dir / f"signal.{int(signum)}").exists():
                handler(signum, None)

    def request(self) -> JobRequest:
        request = decode((self.dir / REQUEST_FILE).read_text())
        assert isinstance(request, JobRequest)
        return request


# --- the launcher process ----------------------------------------------------------------------


def launcher_main(argv: list[str]) -> int:
    """`python -m tunewire_server.worker.training.launcher RUN_DIR <accelerate launch arguments>`."""
    for sig in (STOP_SIGNAL, CHECKPOINT_SIGNAL):
        signal.signal(sig, signal.SIG_IGN)  # the worker forwards these to the ranks; stray ones kill nothing
    die_with_parent(int(os.environ.pop(PARENT_ENV, "0") or 0) or None)
    run_dir = Path(argv[0])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = launch_command_parser().parse_args(argv[1:])
    try:
        launch_command(args)
    except ChildFailedError as exc:
        failures = [{"rank": rank, "exitcode": f.exitcode, "time": f.timestamp,
                     "signal": f.signal_name() if f.exitcode < 0 else None}
                    for rank, f in exc.failures.items()]
        with suppress(OSError):
            _write_private(run_dir / FAILURES_FILE, json.dumps(failures))
        log.error("training processes failed: %s", failures)
        return 1
    return 0


if __name__ == "__main__":
    code = launcher_main(sys.argv[1:])
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # as a rank does: no seconds-long teardown of torch between the run's end and the job's
