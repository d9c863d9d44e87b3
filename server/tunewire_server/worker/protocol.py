"""The worker's side of the pipe to the control plane: one JSON object per line."""

from __future__ import annotations

import argparse
import json
import math
import os
import threading
import time


class MessageWriter:
    def __init__(self, fd: int) -> None:
        self._file = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()

    def send(self, kind: str | None = None, **payload) -> None:
        if kind is not None:
            payload["kind"] = kind
            payload["time"] = time.time()  # when it happened, not when the control plane got it
        line = json.dumps(_finite(payload), separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


def _finite(value):
    """JSON has no NaN/Infinity: send them as strings so the message stays valid."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--message-fd", type=int, required=True)
    return parser.parse_args()


def die_with_parent() -> None:
    """Ask Linux to kill this worker if the control plane dies, so no worker outlives its server."""
    import ctypes
    import signal
    import sys

    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)
