"""Validation as the bytes arrive: a child process reads the partial file of an upload from its first byte
while the stream appends to it, with the same readers and the same report builder as the one-shot path
(report.build_report), so the report is the same one, row numbers and problems included. When the last
byte is in, finish() waits only for the rows not yet read.

Why a process, not a thread: reading rows is pure Python, and a thread doing it holds the GIL against the
event loop that receives the chunks (measured: the stream ran at less than half its speed). The child
imports only the readers (no torch), and reads no byte the server has not written and flushed: the server
writes each new held size on the child's stdin, then "seal" after the last byte; the child answers one
JSON line on stdout, the report or the problem. Closing its stdin early (a broken stream, a discarded
upload) makes it stop. Should the child fail (it cannot start, it dies), the caller builds the report in
one pass instead: the check never depends on it.

A JSONL file is read first by fast_report.py (pyarrow's C++ JSON reader: measured about 25 % fewer
CPU seconds than the Python readers on 1 KiB rows, 35 % on 256-byte rows); whenever that path cannot
vouch for giving the very same report, it gives up and the Python readers read the file again from its
first byte.

Parquet is not read this way (its index is at the end of the file), nor are small files (a process costs
more than their one pass): finish() builds their report in one pass, as before.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO, TextIO

from tunewire_server.datasets.report import DatasetProblem, Report, report_of, rows_of

READ_BLOCK = 1024 * 1024
STREAMED_FORMATS = ("jsonl", "csv", "tsv")
MIN_STREAMED_BYTES = 8 * 1024 * 1024  # smaller uploads are checked in one pass at the end
SEAL = "seal"


class CheckFailed(Exception):
    """The child could not give a report (it could not start, or died): build it in one pass instead."""


def streams(fmt: str, size: int) -> bool:
    """Whether an upload of this format and declared size is checked as it arrives."""
    return fmt in STREAMED_FORMATS and size >= MIN_STREAMED_BYTES


class ArrivalCheck:
    """The server's handle on the child checking one upload (see the module docstring). Not thread-safe:
    the upload's lock orders its calls."""

    def __init__(self, path: Path, fmt: str, label_column: str = "") -> None:
        self._failed = False
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", __name__, str(path), fmt, label_column],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                bufsize=1)  # line-buffered: each held size reaches the child at once
        except OSError:
            self._proc = None
            self._failed = True

    def grow(self, held: int) -> None:
        """The first `held` bytes of the file are written and flushed: the child may read them."""
        self._say(str(held))

    def _say(self, line: str) -> None:
        if self._failed or self._proc is None:
            return
        try:
            self._proc.stdin.write(line + "\n")
        except (OSError, ValueError):  # the child died: its answer is not waited for
            self._failed = True

    def result(self) -> Report:
        """Seal the file and wait for the child's report (blocking): DatasetProblem as build_report raises
        it; CheckFailed when the child gave none."""
        self._say(SEAL)
        proc = self._proc
        if proc is None:
            raise CheckFailed("the check process did not start")
        with contextlib.suppress(OSError):
            proc.stdin.close()
        answer = proc.stdout.readline()
        proc.stdout.close()
        proc.wait()
        self._proc = None
        try:
            message = json.loads(answer)
        except ValueError:
            raise CheckFailed(f"the check process ended with {proc.returncode} and no answer") from None
        if "problem" in message:
            raise DatasetProblem(message["problem"])
        if "report" not in message:
            raise CheckFailed(message.get("error", "no report"))
        return Report.from_json(message["report"])

    def abandon(self) -> None:
        """Stop the child (nothing is reported)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()


# --- the child ---------------------------------------------------------------------------------------------


class Abandoned(Exception):
    """The server closed the announcements before sealing the file: the upload stopped."""


class GrowingFile(io.RawIOBase):
    """A file read from its start while the server appends to it: reads never go past the size the server
    announced on `announcements` (one number a line), wait for the next announcement, and see the end only
    after "seal"."""

    def __init__(self, path: Path, announcements: TextIO) -> None:
        super().__init__()
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed with this object
        self._announcements = announcements
        self._held = 0
        self._sealed = False
        self._pos = 0

    def readable(self) -> bool:
        return True

    def rewind(self) -> None:
        """Read again from the first byte (the bytes announced stay announced)."""
        self._pos = 0
        self._file.seek(0)

    def readinto(self, buffer) -> int:
        while self._pos >= self._held and not self._sealed:
            line = self._announcements.readline()
            if not line:
                raise Abandoned
            line = line.strip()
            if line == SEAL:
                self._sealed = True
            else:
                self._held = int(line)
        room = self._held - self._pos
        if room <= 0:
            return 0  # sealed, and every byte read: the end
        view = memoryview(buffer)
        n = self._file.readinto(view[:min(len(view), room)])
        self._pos += n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


def check_growing(path: Path, fmt: str, label_column: str, announcements: TextIO) -> dict:
    """The child's answer: {"report": JSON} or {"problem": message}; Abandoned if the upload stopped."""
    with GrowingFile(path, announcements) as raw:
        if fmt == "jsonl":
            # Imported here: pyarrow's reader belongs in this child, not in the server that starts it.
            from tunewire_server.datasets.fast_report import fast_jsonl_report

            reader = io.BufferedReader(raw, READ_BLOCK)
            try:
                return {"report": fast_jsonl_report(reader, label_column).to_json()}
            except (Abandoned, OSError):
                raise
            except Exception:  # noqa: BLE001 - FastPathUnavailable, or whatever pyarrow raised: the slow path decides
                reader.detach()  # keeps `raw` open
                raw.rewind()  # the slow path reads the file again from its first byte, and decides
        with io.BufferedReader(raw, READ_BLOCK) as reader:
            return _answer(reader, fmt, label_column)


def _answer(reader: BinaryIO, fmt: str, label_column: str) -> dict:
    try:
        return {"report": report_of(rows_of(reader, fmt), label_column).to_json()}
    except DatasetProblem as exc:
        return {"problem": str(exc)}


def main(argv: list[str]) -> int:
    path, fmt, label_column = Path(argv[0]), argv[1], argv[2] if len(argv) > 2 else ""
    try:
        answer = check_growing(path, fmt, label_column, sys.stdin)
    except Abandoned:
        return 0
    except OSError as exc:
        answer = {"error": f"cannot read the partial file: {exc.strerror or type(exc).__name__}"}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
