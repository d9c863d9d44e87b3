"""What /proc says about a process: its children, command line, CPU time, memory, and training workers."""

from __future__ import annotations

import os
from pathlib import Path

TRAINING_WORKER = b"tunewire_server.worker.training.main"
INFERENCE_WORKER = b"tunewire_server.worker.inference.main"


def children(pid: int) -> list[int]:
    """The children of every thread of `pid` (a test process's server starts workers from its loop thread)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(found)


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


def status_kb(pid: int, key: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM, ...); None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb(pid: int) -> float | None:
    """Resident set size in MiB (VmRSS)."""
    kb = status_kb(pid, "VmRSS")
    return None if kb is None else kb / 1024


def maps_torch(pid: int) -> bool:
    """Whether libtorch is mapped into the process (the control plane must never import torch)."""
    try:
        return b"libtorch" in Path(f"/proc/{pid}/maps").read_bytes()
    except OSError:
        return False


def worker_children(ppid: int, marker: bytes = TRAINING_WORKER, log_under: Path | None = None) -> list[int]:
    """Live (not zombie) children of `ppid` whose command line holds `marker`, sorted; with `log_under`,
    only those whose log (stdout) lies under that folder."""
    found = []
    for pid in children(ppid):
        entry = Path(f"/proc/{pid}")
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmd = (entry / "cmdline").read_bytes()
            log = os.readlink(entry / "fd" / "1") if log_under is not None else ""
        except (OSError, IndexError):
            continue
        if state != "Z" and marker in cmd and (log_under is None or Path(log).is_relative_to(log_under)):
            found.append(pid)
    return found


def training_workers(data_dir: Path) -> list[int]:
    """Live training workers started by this test process's in-process server at `data_dir`: children of
    this process whose log (stdout) lies under that data directory."""
    return worker_children(os.getpid(), TRAINING_WORKER, log_under=data_dir)
