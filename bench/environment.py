"""Where the benchmarks keep things, the environment every benchmark process gets, and the driver's log.

Importing this puts the repository root on sys.path: the bench modules use `tests.support` and `tests.tiny`.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
CACHE = BENCH / ".cache"  # ignored by git (.cache/): built models, scratch data dirs
MODELS = CACHE / "models"
PYTHON = sys.executable

if str(ROOT) not in sys.path:  # `tests.support`, `tests.tiny`, `tests.tiny_lm`
    sys.path.insert(0, str(ROOT))


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


def scratch_dir(name: str) -> Path:
    """A fresh folder under bench/.cache/run/ for one benchmark's server data and plain-script output."""
    path = CACHE / "run" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
