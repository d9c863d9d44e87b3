"""Resolve client-supplied paths under a configured root, trusting nothing about them."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from urllib.parse import unquote

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")


MAX_PATH = 1024
MAX_NAME = 255
# Files the control plane reads whole to learn about a model (config.json, tokenizer_config.json, a chat
# template): real ones are kilobytes (a tokenizer_config.json with a large added-token table, a few MB).
MAX_SMALL_FILE_BYTES = 16 * 1024 * 1024
_READ_CHUNK = 1 << 20


class UnsafePath(ValueError):
    pass


class NotRegularFile(UnsafePath):
    """A FIFO, device, socket or directory where a file is expected: never opened for reading, since a
    FIFO blocks its reader forever and a device never ends."""


class FileTooLarge(UnsafePath):
    pass


def resolve_under(root: Path, relative: str) -> Path:
    """Return the real path of `relative` inside `root`.

    Refuses absolute paths, `..` components, NUL bytes, percent-encoded variants of those, and
    symlinks that lead out of the root. The file need not exist.
    """
    if not relative or not relative.strip():
        raise UnsafePath("is empty")
    if "\x00" in relative:
        raise UnsafePath("contains a NUL byte")
    if len(relative) > MAX_PATH or any(len(part.encode()) > MAX_NAME for part in re.split(r"[/\\]+", relative)):
        raise UnsafePath(f"is too long (at most {MAX_PATH} characters, {MAX_NAME} bytes a name)")
    decoded = relative
    for _ in range(3):  # %252e%252e -> %2e%2e -> ..
        decoded = unquote(decoded)
    for candidate in (relative, decoded):
        if candidate.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", candidate):
            raise UnsafePath("must be relative to the server's root folder")
        parts = re.split(r"[/\\]+", candidate)
        if ".." in parts:
            raise UnsafePath("must not contain '..'")
    if decoded != relative:
        raise UnsafePath("must not be percent-encoded")
    real_root = Path(os.path.realpath(root))
    try:
        real = Path(os.path.realpath(real_root / relative))
    except (OSError, ValueError) as exc:
        raise UnsafePath(f"cannot be resolved: {exc}") from None
    if real != real_root and real_root not in real.parents:
        raise UnsafePath("leads outside the server's root folder")
    return real


def looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and ".." not in name


def open_regular(path: Path | str, *, follow_symlinks: bool = True) -> int:
    """Open `path` read-only and return the fd, only if it is a regular file.

    O_NONBLOCK makes opening a FIFO return at once (instead of waiting for a writer), and the fstat of the
    opened fd (not a stat of the path, which could change in between) decides. The caller closes the fd.
    Raises NotRegularFile, or OSError when the path cannot be opened.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"is not a regular file (it is a {_kind(st.st_mode)})")
        os.set_blocking(fd, True)  # reads of a regular file never block anyway; be plain from here
    except BaseException:
        os.close(fd)
        raise
    return fd


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISLNK, "symlink")):
        if test(mode):
            return name
    return "special file"


def read_limited(path: Path | str, limit: int = MAX_SMALL_FILE_BYTES, *, follow_symlinks: bool = True) -> bytes:
    """The whole content of a regular file of at most `limit` bytes (FileTooLarge beyond it).

    The size is checked on the open fd and again while reading, so a file that grows meanwhile (or lies
    in st_size, like some /proc files) is still cut off at the limit."""
    fd = open_regular(path, follow_symlinks=follow_symlinks)
    try:
        if os.fstat(fd).st_size > limit:
            raise FileTooLarge(f"is larger than {limit} bytes")
        chunks, size = [], 0
        while chunk := os.read(fd, min(_READ_CHUNK, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise FileTooLarge(f"is larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text_limited(path: Path | str, limit: int = MAX_SMALL_FILE_BYTES) -> str:
    """read_limited as UTF-8 text (UnicodeDecodeError, a ValueError, when it is not)."""
    return read_limited(path, limit).decode("utf-8")


def is_regular_file(path: Path | str) -> bool:
    """Like Path.is_file (follows symlinks), never raising: False for anything but a regular file."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def open_under(root: Path | str, relative: str) -> int:
    """Open the regular file `relative` names under `root`, at the moment of opening, and return its fd.

    For readers that run later than the check that accepted the path (the training worker): the path
    is resolved again (refusing a symlink that now leads out of the root), the resolved path is opened
    with O_NOFOLLOW (no symlink swapped in after resolving is followed), and the opened file must be the
    one the path resolves to afterwards (same device and inode) and a regular file. Raises UnsafePath
    (NotRegularFile, ...) or OSError.
    """
    real = resolve_under(Path(root), relative)
    fd = open_regular(real, follow_symlinks=False)
    try:
        opened = os.fstat(fd)
        again = resolve_under(Path(root), relative)
        now = os.stat(again, follow_symlinks=False)
        if (opened.st_dev, opened.st_ino) != (now.st_dev, now.st_ino):
            raise UnsafePath("changed while it was being opened")
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = None  # no /proc: the inode comparison above stands alone
        real_root = os.path.realpath(root)
        if target is not None and not (target == real_root or target.startswith(real_root.rstrip("/") + "/")):
            raise UnsafePath("leads outside the server's root folder")
    except BaseException:
        os.close(fd)
        raise
    return fd


MAX_FOLDER_ENTRIES = 10_000  # entries of a model folder looked at by special_entry


def special_entry(folder: Path | str) -> str | None:
    """The name of the first entry of `folder` that is a FIFO, device or socket (following symlinks), or
    None. Model folders are read by libraries (transformers, tokenizers) that would block forever on a
    FIFO, so a folder holding one is refused before a job is queued."""
    try:
        with os.scandir(folder) as entries:
            for n, entry in enumerate(entries):
                if n >= MAX_FOLDER_ENTRIES:
                    return None
                try:
                    mode = os.stat(entry.path).st_mode  # stat never opens the file: safe on a FIFO
                except OSError:
                    continue  # a dangling symlink: the loader reports it as missing
                if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    return entry.name
    except OSError:
        return None
    return None
