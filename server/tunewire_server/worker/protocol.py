"""The worker's side of the pipe to the control plane: one JSON object per line."""

from __future__ import annotations

import argparse
import dataclasses
import os
import threading
import time

from tunewire_server.protocol import ErrorMessage, Message, encode, json_line


class MessageWriter:
    """Writes messages up the pipe: a protocol.Message (a training worker's), or an untyped one as keyword
    fields (the inference and merge workers' own protocols)."""

    def __init__(self, fd: int) -> None:
        self._file = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()

    def send(self, message: Message | str | None = None, **payload) -> None:
        """Send a Message, stamped with the time it happened unless it has one; or, untyped, `payload`
        with `kind` (and the time) when a kind is given."""
        if isinstance(message, Message):
            self.send_line(encode(stamped(message)))
            return
        if message is not None:
            payload["kind"] = message
            payload["time"] = time.time()  # when it happened, not when the control plane got it
        self.send_line(json_line(payload))

    def send_line(self, line: str) -> None:
        """One message already encoded as a JSON line (a rank's message forwarded as it came)."""
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


class ErrorOnlyWriter:
    """A writer for the ranks other than 0 of a multi-process run: rank 0 reports progress and results,
    so these drop every message but an error, which they leave in a file for the launching worker."""

    def __init__(self, error_path: str | os.PathLike) -> None:
        self._path = os.fspath(error_path)

    def send(self, message: Message) -> None:
        if not isinstance(message, ErrorMessage):
            return
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(encode(stamped(message)) + "\n")


def stamped(message: Message) -> Message:
    """The message with its time set to now, unless it has one (a forwarded rank's message keeps its own)."""
    return message if message.time is not None else dataclasses.replace(message, time=time.time())


def parse_args(ranks: bool = False) -> argparse.Namespace:
    """--message-fd N; with `ranks` (the training worker), --rank-of RUN_DIR instead for one rank of a
    multi-process run, whose messages go through the run folder (worker/training/launcher.py)."""
    parser = argparse.ArgumentParser()
    if not ranks:
        parser.add_argument("--message-fd", type=int, required=True)
        return parser.parse_args()
    channel = parser.add_mutually_exclusive_group(required=True)
    channel.add_argument("--message-fd", type=int, help="the pipe to the control plane (a job's worker)")
    channel.add_argument("--rank-of", help="the run folder of a multi-process job (a rank started by accelerate launch)")
    return parser.parse_args()


def die_with_parent(expected_parent: int | None = None) -> None:
    """Ask Linux to kill this process if its parent dies, so no worker outlives its server (and no launcher
    or rank outlives its worker). `expected_parent`: the parent's pid, where the caller knows it."""
    import ctypes
    import signal
    import sys

    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    parent = os.getppid()
    if parent == 1 or (expected_parent and parent != expected_parent):  # it died before prctl took effect
        os._exit(1)
