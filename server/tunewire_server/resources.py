"""Checks of what the server needs before it takes on work: room on the data disk."""

from __future__ import annotations

import shutil
from pathlib import Path

from tunewire_server.errors import ResourceExhausted

MB = 1024 * 1024


def check_free_disk(path: Path, min_free_mb: int) -> None:
    """Raise ResourceExhausted if the file system holding `path` has less than `min_free_mb` free."""
    if min_free_mb <= 0:
        return
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return  # the write that follows will say what is wrong
    if free < min_free_mb * MB:
        raise ResourceExhausted(f"the server's data disk has {free // MB} MB free, below the {min_free_mb} MB "
                                "it keeps free (min_free_disk_mb); new jobs are refused until space is freed")
