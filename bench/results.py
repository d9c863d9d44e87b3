"""A benchmark's output: a markdown table on stdout, bench/results/<name>.json, and the machine it ran on."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from environment import PYTHON, RESULTS, bench_env


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
