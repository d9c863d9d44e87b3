"""Shared pieces of the benchmarks: environment, tiny models, a real server process, statistics, output.

The benchmark driver processes stay light (the tunewire client only, never torch): models are built
and training runs in child processes, as a user's would. Run `python bench/common.py build-models` to
build the tiny models alone.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
CACHE = BENCH / ".cache"  # ignored by git (.cache/): built models, scratch data dirs
MODELS = CACHE / "models"
PYTHON = sys.executable

if str(ROOT) not in sys.path:  # `tests.tiny`, `tests.tiny_lm` build the models
    sys.path.insert(0, str(ROOT))

# The sentence every generator request starts from: the tiny Llama was pretrained to keep counting,
# so greedy generation runs to max_new_tokens rather than stopping at a random EOS.
COUNTING_PROMPT = "one two three four five six seven eight nine ten one two three"


# --- environment ---------------------------------------------------------------------------------


def bench_env(threads: int) -> dict[str, str]:
    """The environment every process of a benchmark gets: server, workers and plain scripts alike."""
    env = dict(os.environ)
    env.update({
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TUNEWIRE_TORCH_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
    })
    return env


def install_signal_exit() -> None:
    """SIGTERM/SIGHUP exit through `finally` blocks, so that servers this benchmark started stop too."""
    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit)


def log(*parts) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)


# --- models and data -----------------------------------------------------------------------------


def _build_models(root: Path) -> None:
    """Runs in a child process (it imports torch)."""
    from tests import tiny, tiny_lm

    root.mkdir(parents=True, exist_ok=True)
    if not (root / "tiny-bert" / "config.json").is_file():
        tiny.build_tiny_bert(root / "tiny-bert")
    if not (root / "tiny-llama" / "config.json").is_file():
        tiny_lm.build_tiny_llama(root / "tiny-llama", pretrain_steps=150)
    if not (root / "small-bert" / "config.json").is_file():
        build_small_bert(root / "small-bert")


def build_small_bert(path: Path) -> Path:
    """A 4-layer BERT, hidden 256 (about 3M parameters, random weights): a classifier whose forward pass,
    not the RPC around it, dominates a Predict call, as it does for a real model."""
    import torch
    from transformers import BertConfig, BertModel

    from tests import tiny

    torch.manual_seed(0)
    tokenizer = tiny.build_tokenizer(tiny.POSITIVE + tiny.NEGATIVE + tiny.FILLER)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=64)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def ensure_models(threads: int = 1) -> Path:
    """tiny-bert (2-layer BERT, hidden 32), small-bert (4 layers, hidden 256) and tiny-llama (2-layer Llama,
    hidden 32, pretrained to count) under bench/.cache/models, built once."""
    if not all((MODELS / name / "config.json").is_file() for name in ("tiny-bert", "tiny-llama", "small-bert")):
        log("building the tiny models into", MODELS)
        subprocess.run([PYTHON, str(BENCH / "common.py"), "build-models"], check=True, env=bench_env(threads),
                       timeout=900)
    return MODELS


def write_datasets(dataset_root: Path) -> Path:
    """sentiment.jsonl (text, label) and text.jsonl (text) under `dataset_root`."""
    from tests import tiny, tiny_lm

    dataset_root.mkdir(parents=True, exist_ok=True)
    tiny.write_jsonl(dataset_root / "sentiment.jsonl", tiny.sentiment_rows(256))
    tiny_lm.write_jsonl(dataset_root / "text.jsonl", tiny_lm.text_rows(256))
    return dataset_root


def classification_spec(max_steps: int, *, logging_steps: int = 10, batch: int = 8, model: str = "tiny-bert") -> dict:
    """The benchmark classification job: tiny-bert, sentiment.jsonl, fixed steps, no eval, no checkpoints."""
    return {
        "display_name": f"bench classification {max_steps} steps",
        "base_model": model,
        "classification": {"max_length": 32},
        "train_dataset": {"file": {"path": "sentiment.jsonl"}},
        "hyperparameters": {
            "max_steps": max_steps, "learning_rate": 0.001, "per_device_train_batch_size": batch,
            "logging_steps": logging_steps, "save_strategy": "no", "eval_strategy": "no",
            "precision": "fp32",
        },
    }


def sft_spec(max_steps: int, *, logging_steps: int = 10, batch: int = 8) -> dict:
    """The benchmark SFT job: tiny-llama, text.jsonl, fixed steps, max_length 64, no eval, no checkpoints."""
    return {
        "display_name": f"bench sft {max_steps} steps",
        "base_model": "tiny-llama",
        "sft": {"text_field": "text", "max_length": 64},
        "train_dataset": {"file": {"path": "text.jsonl"}},
        "hyperparameters": {
            "max_steps": max_steps, "learning_rate": 0.001, "per_device_train_batch_size": batch,
            "logging_steps": logging_steps, "save_strategy": "no", "eval_strategy": "no",
            "precision": "fp32",
        },
    }


def plain_command(task: str, *, model: Path, train_file: Path, output_dir: Path, max_steps: int,
                  logging_steps: int = 10, batch: int = 8, first_step_file: Path | None = None) -> list[str]:
    """`python bench/plain_<task>.py ...` with the arguments that match the spec above."""
    script = BENCH / ("plain_classification.py" if task == "classification" else "plain_sft.py")
    cmd = [PYTHON, str(script), "--model", str(model), "--train-file", str(train_file), "--output-dir",
           str(output_dir), "--max-steps", str(max_steps), "--logging-steps", str(logging_steps),
           "--batch-size", str(batch)]
    if first_step_file is not None:
        cmd += ["--first-step-file", str(first_step_file)]
    return cmd


# --- a real server process -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SERVICE = b"tunewire.v1.TuningService"
_HEALTH_REQUEST = b"\x0a" + bytes([len(_SERVICE)]) + _SERVICE
_HEALTH_SERVING = b"\x08\x01"
# Reconnect quickly: grpc's default backoff (1 s, growing) would hide how fast the server came up.
_FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 5), ("grpc.min_reconnect_backoff_ms", 5),
                   ("grpc.max_reconnect_backoff_ms", 20)]


def wait_serving(address: str, timeout: float, alive: Callable[[], bool] = lambda: True,
                 interval: float = 0.005) -> float:
    """Poll grpc.health.v1 Health/Check until SERVING; returns time.monotonic() of the first SERVING answer."""
    import grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address, options=_FAST_RECONNECT) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        while True:
            try:
                if check(_HEALTH_REQUEST, timeout=0.25) == _HEALTH_SERVING:
                    return time.monotonic()
            except grpc.RpcError:
                pass
            if not alive():
                raise RuntimeError(f"the server at {address} exited before SERVING")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server at {address} was not SERVING within {timeout} s")
            time.sleep(interval)


_LIVE: set[ServerProcess] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()


class ServerProcess:
    """`python -m tunewire_server` (or the `tunewire-server` script) as a child process on 127.0.0.1."""

    def __init__(self, data_dir: Path, model_root: Path, *extra: str, threads: int = 1,
                 console_script: bool = False) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "server.log"
        exe = [str(Path(PYTHON).parent / "tunewire-server")] if console_script else [PYTHON, "-m", "tunewire_server"]
        self.cmd = [*exe, "--port", str(self.port), "--data-dir", str(data_dir), "--model-root", str(model_root),
                    "--torch-threads", str(threads), "--metrics-port", "0", *extra]
        self._env = bench_env(threads)
        self._log = None
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self, timeout: float = 120) -> ServerProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self._env)
        _LIVE.add(self)
        try:
            self.serving_at = wait_serving(self.address, timeout, alive=lambda: self.proc.poll() is None)
        except Exception:
            self.stop()
            raise RuntimeError(f"server did not start: {self.log_tail()}") from None
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        _LIVE.discard(self)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def training_workers(self) -> list[int]:
        return [pid for pid in children(self.pid) if b"tunewire_server.worker.training" in cmdline(pid)]

    def inference_workers(self) -> list[int]:
        return [pid for pid in children(self.pid) if b"tunewire_server.worker.inference" in cmdline(pid)]

    def wait_warm_worker(self, timeout: float = 180) -> float:
        """Wait until the server's idle warm training worker has finished its imports.

        Seen from outside: the one training worker child that runs no job (no jobs/*/worker.pid names
        it) and whose CPU time stopped growing (it blocks reading its job from stdin after `ready`).
        Returns the seconds waited."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        stable_since: float | None = None
        last: tuple[int, int] | None = None
        busy: set[int] = set()
        while time.monotonic() < deadline:
            busy = set()  # workers running a job: the job's folder holds their pid
            for pid_file in (self.data_dir / "jobs").glob("*/worker.pid"):
                with contextlib.suppress(OSError, ValueError):
                    busy.add(int(pid_file.read_text()))
            workers = [pid for pid in self.training_workers() if pid not in busy]
            if len(workers) == 1:
                pid = workers[0]
                cpu = cpu_ticks(pid)
                if cpu is not None and last == (pid, cpu):
                    stable_since = stable_since or time.monotonic()
                    if time.monotonic() - stable_since >= 0.5:
                        return time.monotonic() - t0
                else:
                    stable_since = None
                last = (pid, cpu) if cpu is not None else None
            else:
                stable_since, last = None, None
            time.sleep(0.1)
        workers = {pid: (cpu_ticks(pid), cmdline(pid)[:80]) for pid in self.training_workers()}
        raise TimeoutError(f"no idle warm training worker appeared: training workers {workers}, "
                           f"running jobs' workers {sorted(busy)}; server log: {self.log_tail()}")


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_mb(pid: int) -> float | None:
    """Resident set size in MiB (VmRSS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def maps_torch(pid: int) -> bool:
    """Whether libtorch is mapped into the process (the control plane must never import torch)."""
    try:
        return b"libtorch" in Path(f"/proc/{pid}/maps").read_bytes()
    except OSError:
        return False


def event_epoch(event) -> float:
    """A JobEvent's time (a naive UTC datetime from the wire Timestamp) as seconds since the epoch."""
    t = event.time
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t.timestamp()


# --- jobs through the SDK ------------------------------------------------------------------------


def run_job(client, spec: dict, *, timeout: float = 1800) -> dict:
    """Submit `spec` and follow its events until it is terminal, as a client sees it.

    Returns seconds from just before SubmitJob to the receipt of the terminal state change
    (`elapsed`), and the wall-clock (time.time) moments: submitted, RUNNING (control plane's time),
    first training step (the worker's callback time) and its receipt. A job still running after
    `timeout` seconds is cancelled, which ends the stream."""
    import threading

    from tunewire import JobState, StateChange, TrainLog

    submitted = time.time()
    t0 = time.monotonic()
    job = client.submit(spec)
    watchdog = threading.Timer(timeout, lambda: client.cancel(job.id))
    watchdog.daemon = True
    watchdog.start()
    out = {"job_id": job.id, "submitted": submitted, "running": None, "first_step": None,
           "first_step_received": None, "state": None, "events": 0}
    try:
        for event in client.stream_metrics(job.id):
            out["events"] += 1
            data = event.data
            if isinstance(data, StateChange):
                if data.state == JobState.RUNNING and out["running"] is None:
                    out["running"] = event_epoch(event)
                if data.state.terminal:
                    out["elapsed"] = time.monotonic() - t0
                    out["state"] = data.state.value
                    break
            elif isinstance(data, TrainLog) and data.step >= 1:
                if out["first_step"] is None:
                    out["first_step"] = event_epoch(event)
                    out["first_step_received"] = time.time()
                if data.loss is not None:  # not the end-of-training summary
                    now = (event_epoch(event), data.step, data.num_tokens or 0.0)
                    out["first_log"] = out.get("first_log") or now
                    out["last_log"] = now
    finally:
        watchdog.cancel()
    if out["state"] != "SUCCEEDED":
        final = client.get(job.id)
        raise RuntimeError(f"job {job.id} ended {out['state']}: {final.error}")
    out["steps_per_s"] = steps_per_s(out.get("first_log"), out.get("last_log"))
    out["tokens_per_s"] = tokens_per_s(out.get("first_log"), out.get("last_log"))
    return out


def steps_per_s(first, last) -> float:
    """Training speed between two train logs given as (time, step)."""
    if not first or not last or last[1] <= first[1] or last[0] <= first[0]:
        return math.nan
    return (last[1] - first[1]) / (last[0] - first[0])


def tokens_per_s(first, last) -> float:
    """Tokens trained a second between two train logs given as (time, step, tokens so far): TRL's
    `num_tokens`, the tokens the batches held (padding included, none with padding-free packing)."""
    if not first or not last or len(first) < 3 or last[2] <= first[2] or last[0] <= first[0]:
        return math.nan
    return (last[2] - first[2]) / (last[0] - first[0])


def run_plain(cmd: list[str], env: dict, *, timeout: float = 1800) -> dict:
    """Run a plain script; `elapsed` is seconds from just before the process starts to the model saved
    (the script's last JSON line says when), `exit_elapsed` to the process exit."""
    started = time.time()
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    exit_elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{\"imported\"")][-1])
    return {"started": started, "elapsed": report["saved"] - started, "exit_elapsed": exit_elapsed,
            "imports": report["imported"] - started, "after_imports": report["saved"] - report["imported"],
            "train_and_save": report["saved"] - report["train_began"], "steps": report["steps"],
            "steps_per_s": steps_per_s(report.get("first_log"), report.get("last_log")),
            "tokens_per_s": tokens_per_s(report.get("first_log"), report.get("last_log"))}


# --- statistics and output -----------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN for no values."""
    if not values:
        return math.nan
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(c) for c in row) + " |")
    return "\n".join(lines)


def machine_info() -> dict:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_gib = round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024**2, 1)
    versions = {}
    probe = ("import json, torch, transformers, trl, peft, grpc; print(json.dumps({'torch': torch.__version__, "
             "'transformers': transformers.__version__, 'trl': trl.__version__, 'peft': peft.__version__, "
             "'grpcio': grpc.__version__}))")
    with contextlib.suppress(Exception):
        versions = json.loads(subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, timeout=120,
                                             env=bench_env(1)).stdout)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        **versions,
    }


def save_results(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"benchmark": name, "time": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()], **data}
    path.write_text(json.dumps(data, indent=1, default=_json_default) + "\n")
    return path


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def rounded(values: Iterable[float], digits: int = 4) -> list[float]:
    return [round(v, digits) for v in values]


def scratch_dir(name: str) -> Path:
    """A fresh folder under bench/.cache/run/ for one benchmark's server data and plain-script output."""
    import shutil

    path = CACHE / "run" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


if __name__ == "__main__":
    if sys.argv[1:] == ["build-models"]:
        _build_models(MODELS)
    else:
        sys.exit("usage: python bench/common.py build-models")
