"""Process-wide settings for a worker: threads, device and precision."""

from __future__ import annotations

import os


def configure_torch() -> None:
    import torch

    threads = int(os.environ.get("TUNEWIRE_TORCH_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def device_kind() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def bf16_supported() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def torch_dtype(name: str | None):
    """The torch dtype a plan's (or meta.json's) model_dtype names: validation.sft.DTYPES' values; float32
    when unset. A name validation never produces is a bug, not something to guess around."""
    import torch

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name and name not in dtypes:
        raise ValueError(f"unknown model dtype {name!r}")
    return dtypes[name or "float32"]


class UserError(Exception):
    """The job's input is at fault: reported as a user error with a code and a field."""

    def __init__(self, code: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def checked_config(model: str):
    """Load a model's config without ever running its code; refuse models that need custom code."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model, trust_remote_code=False)
    except Exception as exc:  # missing files, offline hub id, unknown architecture
        raise UserError("MODEL_UNAVAILABLE", f"cannot load the config of {model!r}: {exc}", "base_model") from None
    if getattr(config, "auto_map", None):
        raise UserError("CUSTOM_CODE_REFUSED", "models that need custom code (auto_map) are refused", "base_model")
    return config
