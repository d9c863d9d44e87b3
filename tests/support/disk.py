"""A small disk to fill: a tmpfs mounted for one test (root only), and a filler file that takes its room."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def tmpfs(mount: Path, size: int | str) -> Iterator[Path]:
    """A tmpfs at `mount` (created) of `size` MB, or of a mount size such as "64k"; lazily unmounted
    afterwards. The test is skipped where mounting is not allowed."""
    import pytest

    mount.mkdir(parents=True, exist_ok=True)
    size = f"{size}m" if isinstance(size, int) else size
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, chunks: tuple[int, ...] = (1 << 20, 4096)) -> Path:
    """Write a filler file until the disk has no room left, in ever smaller `chunks`."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for chunk in chunks:
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler
