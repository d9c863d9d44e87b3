"""A folder's files as its completeness marker records them, once the marker and every file verify.

Verification hashes every file (checkpoints.verify), which for a large model takes seconds; the answer is
cached per folder under a signature of what the disk says about it (each file's inode, size and mtime,
and the marker's). A file rewritten, replaced, added or removed changes the signature and is hashed again;
only a change that keeps the inode, size and mtime (bit rot, a deliberate `touch -d`) is not seen here,
and the client's per-file sha256 check catches that one.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from tunewire_server.checkpoints import verify
from tunewire_server.models.layout import marker_files, marker_step


@dataclass(frozen=True)
class VerifiedFile:
    size: int
    sha256: str


@dataclass(frozen=True)
class VerifiedFolder:
    """A folder that verified: its marker's step and its files {relative path: VerifiedFile}."""

    path: Path
    step: int | None
    files: dict[str, VerifiedFile]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files.values())


def _signature(folder: Path) -> tuple | None:
    """(name, inode, size, mtime_ns) of every entry under `folder` and of the marker; None if unreadable."""
    try:
        entries = []
        for root, dirs, files in os.walk(folder):
            for name in sorted(files + dirs):
                st = os.lstat(os.path.join(root, name))
                entries.append((os.path.relpath(os.path.join(root, name), folder), st.st_ino, st.st_size,
                                st.st_mtime_ns, st.st_mode))
        st = os.lstat(folder)
        return (st.st_ino, *sorted(entries))
    except OSError:
        return None


class VerifyCache:
    """checkpoints.verify, remembered per folder while its signature holds (bounded LRU)."""

    def __init__(self, key: bytes, size: int = 256) -> None:
        self._key = key
        self._size = size
        self._done: OrderedDict[str, tuple[tuple, VerifiedFolder]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, folder: Path) -> VerifiedFolder | str:
        """The verified folder, or why it is not complete (checkpoints.verify's reason)."""
        if folder.is_symlink() or not folder.is_dir():
            return "it does not exist"
        signature = _signature(folder)
        cache_key = str(folder)
        with self._lock:
            hit = self._done.get(cache_key)
            if hit is not None and signature is not None and hit[0] == signature:
                self._done.move_to_end(cache_key)
                return hit[1]
        reason = verify(folder, self._key)
        if reason is not None:
            return reason
        files = {}
        for name, entry in marker_files(folder).items():
            files[name] = VerifiedFile(int(entry["size"]), str(entry["sha256"]))
        result = VerifiedFolder(folder, marker_step(folder), files)
        if signature is not None and signature == _signature(folder):  # unchanged while it was hashed
            with self._lock:
                self._done[cache_key] = (signature, result)
                while len(self._done) > self._size:
                    self._done.popitem(last=False)
        return result

    def forget(self, prefix: Path) -> None:
        """Drop every cached folder at or under `prefix` (deleted or pruned)."""
        with self._lock:
            for name in [n for n in self._done if n == str(prefix) or n.startswith(str(prefix) + os.sep)]:
                del self._done[name]

