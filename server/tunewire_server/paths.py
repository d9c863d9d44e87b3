"""Resolve client-supplied paths under a configured root, trusting nothing about them."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")


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
    real = Path(os.path.realpath(real_root / relative))
    if real != real_root and real_root not in real.parents:
        raise UnsafePath("leads outside the server's root folder")
    return real


def looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and ".." not in name
