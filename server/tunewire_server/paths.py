"""Resolve client-supplied paths under a configured root, trusting nothing about them."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")


MAX_PATH = 1024
MAX_NAME = 255


class UnsafePath(ValueError):
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
