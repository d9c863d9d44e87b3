"""The base model: a hub id or a folder under the model root, checked before anything reads it.

A local folder must hold a readable config.json and only regular files, and must not need custom code.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

from tunewire_server.config import Settings
from tunewire_server.errors import preview
from tunewire_server.validation.common import Violations
from tunewire_server.validation.paths import (
    UnsafePath,
    is_regular_file,
    looks_like_hub_id,
    read_text_limited,
    resolve_under,
    special_entry,
)


def check_model(name: str, settings: Settings, v: Violations) -> str | None:
    """The model as the worker loads it (a local folder's path, or the hub id), or None after adding
    the problem to `v`."""
    field = "base_model"
    if not name.strip():
        v.add(field, "is required: a hub id or a folder under the server's model root")
        return None
    allowed = [p.strip() for p in settings.allowed_models.split(",") if p.strip()]
    if allowed and not any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed):
        v.add(field, f"{preview(name)} is not on this server's model allow-list")
        return None
    try:
        local = resolve_under(settings.model_root, name)
    except UnsafePath as exc:
        v.add(field, str(exc))
        return None
    try:
        is_local = local.is_dir()
    except OSError as exc:
        v.add(field, f"cannot be read: {exc.strerror or exc}")
        return None
    if is_local:
        special = special_entry(local)
        if special:
            v.add(field, f"folder {preview(name)} holds {preview(special)}, which is not a regular file; the "
                  "server reads regular files only")
            return None
        config = local / "config.json"
        if not config.exists():
            v.add(field, f"folder {preview(name)} has no config.json")
            return None
        try:
            cfg = json.loads(read_text_limited(config))
        except UnsafePath as exc:  # a FIFO, device or directory; or too large
            v.add(field, f"config.json of {preview(name)} {exc}")
            return None
        except RecursionError:
            v.add(field, f"config.json of {preview(name)} nests too deeply")
            return None
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else type(exc).__name__
            v.add(field, f"config.json of {preview(name)} is unreadable: {reason}")
            return None
        if not isinstance(cfg, dict) or "auto_map" in cfg:
            v.add(field, "models that need custom code (auto_map in config.json) are refused")
            return None
        return str(local)
    if settings.allow_hub_models and looks_like_hub_id(name) and "/" in name:
        return name
    v.add(field, f"{preview(name)} is not a folder under the model root and not an accepted hub id")
    return None


# --- local model facts --------------------------------------------------------------------------


def local_model(name: str, settings: Settings) -> Path | None:
    """The folder of a base model under the model root that has a config.json; None for a hub id."""
    try:
        path = resolve_under(settings.model_root, name)
    except UnsafePath:
        return None
    return path if is_regular_file(path / "config.json") else None


def json_file(path: Path):
    """A small JSON file's content, or None when it is missing, unreadable or not a regular file (never
    blocks on a FIFO; model.check_model reports such files)."""
    try:
        return json.loads(read_text_limited(path))
    except (OSError, ValueError, RecursionError):  # UnsafePath is a ValueError
        return None


def read_config(folder: Path) -> dict:
    cfg = json_file(folder / "config.json")
    return cfg if isinstance(cfg, dict) else {}


def max_positions(cfg: dict) -> int | None:
    text_cfg = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = text_cfg.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None
