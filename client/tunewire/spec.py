"""Job specs: the contract's messages under friendly names, and loading them from YAML or JSON.

A spec file maps onto JobSpec field for field. Enum values may be written short and in any case
(`eval_strategy: steps` for EVAL_STRATEGY_STEPS). Unknown fields are an error that names them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from google.protobuf import descriptor, json_format

from tunewire.v1.job_pb2 import (
    ClassificationTask,
    Dataset,
    FileDataset,
    HubDataset,
    Hyperparameters,
    InlineDataset,
    JobSpec,
    LoraConfig,
    SftTask,
    UploadedDatasetSource,
)

__all__ = [
    "ClassificationTask", "Dataset", "FileDataset", "Hyperparameters", "HubDataset", "InlineDataset", "JobSpec",
    "LoraConfig", "SftTask", "SpecError", "UploadedDatasetSource", "load_spec", "spec_from_dict",
]


class SpecError(ValueError):
    """A spec file or mapping does not describe a JobSpec."""


def _expand_enums(value: Any, desc: descriptor.Descriptor) -> Any:
    if not isinstance(value, Mapping):
        return value
    out = {}
    for key, item in value.items():
        fd = desc.fields_by_name.get(key) or desc.fields_by_camelcase_name.get(key)
        if fd is None:
            out[key] = item  # ParseDict reports it by name
        elif fd.message_type is not None and fd.message_type.full_name.startswith("tunewire."):
            if fd.is_repeated:
                out[key] = [_expand_enums(x, fd.message_type) for x in item] if isinstance(item, list) else item
            else:
                out[key] = _expand_enums(item, fd.message_type)
        elif fd.enum_type is not None and isinstance(item, str):
            out[key] = _enum_name(fd.enum_type, item)
        else:
            out[key] = item
    return out


def _enum_name(enum: descriptor.EnumDescriptor, value: str) -> str:
    if value in enum.values_by_name:
        return value
    prefix = "".join("_" + c if c.isupper() else c.upper() for c in enum.name).lstrip("_") + "_"
    candidate = prefix + value.upper().replace("-", "_")
    return candidate if candidate in enum.values_by_name else value


def spec_from_dict(data: Mapping[str, Any]) -> JobSpec:
    """Build a JobSpec from a mapping shaped like the message (as a YAML or JSON file is)."""
    if not isinstance(data, Mapping):
        raise SpecError(f"a job spec must be a mapping, got {type(data).__name__}")
    try:
        return json_format.ParseDict(_expand_enums(dict(data), JobSpec.DESCRIPTOR), JobSpec())
    except json_format.ParseError as exc:
        raise SpecError(str(exc)) from None


def load_spec(source: str | Path | Mapping[str, Any]) -> JobSpec:
    """Load a JobSpec from a .yaml/.yml/.json file, or from a mapping."""
    if isinstance(source, Mapping):
        return spec_from_dict(source)
    path = Path(source)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SpecError('YAML spec files need PyYAML: pip install "tunewire[cli]"') from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError(f"{path}: not valid YAML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{path}: not valid JSON: {exc}") from None
    try:
        return spec_from_dict(data)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
