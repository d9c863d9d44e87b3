"""Artifact keys: clean relative POSIX paths ("jobs/<id>/checkpoints/checkpoint-10"), the same in every backend."""

from __future__ import annotations

from tunewire_server.artifacts.errors import ArtifactKeyError

_MAX_KEY = 1024  # S3's limit on a whole object key, in bytes


def check_key(key: str, *, allow_empty: bool = False) -> str:
    """`key` without surrounding slashes, or ArtifactKeyError when it is not a clean relative path."""
    if not isinstance(key, str):
        raise ArtifactKeyError(f"an artifact key is a str, not {type(key).__name__}")
    stripped = key.strip("/")
    if not stripped:
        if allow_empty:
            return ""
        raise ArtifactKeyError("an artifact key must not be empty")
    if key.startswith("/") or "\\" in key or "\x00" in key or len(key.encode()) > _MAX_KEY:
        raise ArtifactKeyError(f"artifact key {key[:80]!r} is not a clean relative path")
    if any(part in ("", ".", "..") for part in stripped.split("/")):
        raise ArtifactKeyError(f"artifact key {key[:80]!r} has an empty, '.' or '..' part")
    return stripped


def join_key(*parts: str) -> str:
    """The parts joined with "/", each checked (empty parts are skipped)."""
    return "/".join(check_key(p) for p in parts if p.strip("/"))


def is_under(key: str, prefix: str) -> bool:
    """Whether `key` is `prefix` or inside it, by whole path segments ("a/b" is not under "a/bc")."""
    return not prefix or key == prefix or key.startswith(prefix + "/")
