"""Checkpoint completeness markers, and picking the checkpoint to resume from.

Trainer writes `checkpoints/checkpoint-N/`; once it has, the worker writes a marker file into it,
last, listing every file with its size and an HMAC over that list keyed by a secret only this
server has. A checkpoint is resumed only if its marker is there, the HMAC checks out and every
file still has its size: a half-written checkpoint, or one put there by anyone else, is skipped
and the one before it is used. No torch here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from pathlib import Path

MARKER = "tunewire-complete.json"
KEY_FILE = "checkpoint.key"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def load_or_create_key(data_dir: Path) -> bytes:
    path = data_dir / KEY_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def _listing(folder: Path) -> dict[str, int]:
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MARKER:
            files[str(path.relative_to(folder))] = path.stat().st_size
    return files


def _sign(key: bytes, step: int, files: dict[str, int]) -> str:
    body = json.dumps({"step": step, "files": files}, sort_keys=True).encode()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def mark_complete(folder: Path, step: int, key: bytes) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    files = _listing(folder)
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"step": step, "files": files, "hmac": _sign(key, step, files)}))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, folder / MARKER)


def is_complete(folder: Path, key: bytes) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text())
        step, files = int(marker["step"]), dict(marker["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not hmac.compare_digest(str(marker.get("hmac", "")), _sign(key, step, files)):
        return False
    return _listing(folder) == files


def latest_complete(checkpoints_dir: Path, key: bytes) -> Path | None:
    """The newest checkpoint that is complete and ours, or None."""
    if not checkpoints_dir.is_dir():
        return None
    found = []
    for child in checkpoints_dir.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    for _, folder in sorted(found, reverse=True):
        if is_complete(folder, key):
            return folder
    return None
