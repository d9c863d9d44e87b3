"""Completeness markers for checkpoints and final models, and picking the checkpoint to resume from.

Trainer writes `checkpoints/checkpoint-N/`; once it has, the worker writes a marker file into it,
last, listing every file with its size and sha256 and an HMAC over that list keyed by a secret only
this server has. The files are fsynced before they are hashed and the marker is written to a temporary
name, fsynced and renamed, so a marker is on disk only for content that is. A checkpoint is resumed only
if its marker is there, the HMAC checks out and every file still has its size and hash: a half-written
checkpoint, one corrupted later (even at the same size), or one put there by anyone else, is skipped and
the one before it is used. No torch here.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("tunewire.checkpoints")

MARKER = "tunewire-complete.json"
KEY_FILE = "checkpoint.key"
VERSION = 2  # 1: sizes only (never trusted now: it cannot tell a same-size corruption)
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_CHUNK = 1 << 20


def load_or_create_key(data_dir: Path) -> bytes:
    """The checkpoint signing key under `data_dir`, created on first use. Replicas that share the folder may
    start together: the key is written whole to a temporary file and linked into place (link fails if one is
    there already), so nobody ever reads a key that is still being written."""
    path = data_dir / KEY_FILE
    if not path.exists():
        tmp = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # another replica's key won: use that one
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text().strip())


def _files(folder: Path) -> list[str]:
    """Every regular file under `folder` (relative, sorted) but the marker and its temporary file."""
    names = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.name not in (MARKER, MARKER + ".tmp"):
            names.append(path.relative_to(folder).as_posix())
    return sorted(names)


def _hash(path: Path, *, fsync: bool = False) -> tuple[int, str]:
    """(size, sha256) of a file, read in chunks; with `fsync`, its content is flushed to disk first."""
    digest = hashlib.sha256()
    size = 0
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        if fsync:
            os.fsync(f.fileno())
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _sign(key: bytes, step: int, files: dict) -> str:
    body = json.dumps({"version": VERSION, "step": step, "files": files}, sort_keys=True).encode()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mark_complete(folder: Path, step: int, key: bytes) -> None:
    """Write `folder`'s marker, last: every file is fsynced and hashed first, then the signed marker is
    written whole (temporary file, fsync, rename, fsync of the folder). Any failure (a full disk) raises
    and leaves no marker, so the folder is never taken for complete."""
    tmp = folder / (MARKER + ".tmp")
    try:
        files = {}
        for name in _files(folder):
            size, sha = _hash(folder / name, fsync=True)
            files[name] = {"size": size, "sha256": sha}
        for sub in sorted({p.parent for p in folder.rglob("*") if p.is_file()} | {folder}, reverse=True):
            _fsync_dir(sub)
        marker = {"version": VERSION, "step": step, "files": files, "hmac": _sign(key, step, files)}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(marker))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / MARKER)
        _fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def unmark(folder: Path) -> None:
    """Remove a folder's marker (before its content is rewritten, or once it failed to load)."""
    with contextlib.suppress(FileNotFoundError):
        (folder / MARKER).unlink()


def verify(folder: Path, key: bytes) -> str | None:
    """Why `folder` is not a complete checkpoint (or model) this server wrote, or None when it is."""
    try:
        marker = json.loads((folder / MARKER).read_text())
        step, files = int(marker["step"]), dict(marker["files"])
        version = int(marker.get("version", 1))
    except FileNotFoundError:
        return "it has no completeness marker (never finished)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its marker is unreadable ({type(exc).__name__})"
    if version != VERSION:
        return f"its marker has version {version}, not {VERSION} (no content hashes)"
    if not hmac.compare_digest(str(marker.get("hmac", "")), _sign(key, step, files)):
        return "its marker's signature does not match (not written by this server, or altered)"
    present = _files(folder)
    if sorted(files) != present:
        missing, extra = sorted(set(files) - set(present)), sorted(set(present) - set(files))
        return f"its files differ from the marker (missing: {missing[:3]}, unexpected: {extra[:3]})"
    for name, expected in files.items():
        try:
            size, sha = _hash(folder / name)
        except OSError as exc:
            return f"{name} cannot be read ({exc.strerror or type(exc).__name__})"
        if not isinstance(expected, dict) or size != expected.get("size"):
            return f"{name} has {size} bytes, not the {expected.get('size') if isinstance(expected, dict) else '?'} recorded"
        if not hmac.compare_digest(sha, str(expected.get("sha256", ""))):
            return f"{name} does not match its recorded sha256 (corrupted)"
    return None


def is_complete(folder: Path, key: bytes) -> bool:
    return verify(folder, key) is None


def step_of(folder: Path) -> int | None:
    match = _CHECKPOINT.match(folder.name)
    return int(match.group(1)) if match else None


def complete_checkpoints(checkpoints_dir: Path, key: bytes) -> Iterator[Path]:
    """The checkpoints that verify, newest first; each one skipped is logged with the reason."""
    if not checkpoints_dir.is_dir():
        return
    found = []
    for child in checkpoints_dir.iterdir():
        step = step_of(child)
        if step is not None and child.is_dir() and not child.is_symlink():
            found.append((step, child))
    for _, folder in sorted(found, reverse=True):
        reason = verify(folder, key)
        if reason is None:
            yield folder
        else:
            log.warning("skipping %s: %s", folder.name, reason)


def latest_complete(checkpoints_dir: Path, key: bytes) -> Path | None:
    """The newest checkpoint that is complete and ours, or None."""
    return next(complete_checkpoints(checkpoints_dir, key), None)
