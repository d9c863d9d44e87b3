"""Early writeback of an upload's partial file: every WINDOW bytes appended, the kernel is asked to start
writing the window before it to disk (sync_file_range with SYNC_FILE_RANGE_WRITE: it starts the writes
and returns, it waits for nothing and guarantees nothing). The seal's fsync is still what makes the file
durable; it then has only the last window or two left to write instead of the whole file, which the kernel
would otherwise hold dirty in memory until then (on a machine with gigabytes of memory, a 1 GiB upload
stays under the dirty-page threshold that starts writeback by itself). Pages stay in the page cache, so
the arrival check (arrival.py) still reads them from memory.

Linux only: elsewhere, or if the call fails, nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

WINDOW = 32 * 1024 * 1024
SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()


def start_writeback(fd: int, before: int, after: int) -> None:
    """The file's size went from `before` to `after` bytes: if that completed a WINDOW (or more), start
    writing it."""
    start, end = before // WINDOW * WINDOW, after // WINDOW * WINDOW
    if _SYNC_FILE_RANGE is not None and end > start:
        _SYNC_FILE_RANGE(fd, start, end - start, SYNC_FILE_RANGE_WRITE)
