"""What a training worker reports when its job fails: a class (USER or SYSTEM), a code and a short message.

The control plane retries only SYSTEM errors, so a USER error must be the job's own fault for sure, and a
SYSTEM error one that another attempt may not meet. How an exception is classed:

1. `UserError`: raised by the worker's own checks, which know the field: USER, its code.
2. Known machine faults, whatever the phase (also when they are the cause of a library's wrapper
   exception, e.g. datasets' DatasetGenerationError): out of memory (OUT_OF_MEMORY), a full disk
   (DISK_FULL: ENOSPC/EDQUOT, "No space left on device", or a save that failed with the disk nearly
   full), CUDA/NCCL errors (DEVICE_ERROR), other errno-carrying OSErrors (IO_ERROR): SYSTEM.
3. Otherwise by the phase the job was in (Control.phase, set by the runners) and the exception's type:
   - "data" (loading, checking and tokenizing the datasets): ValueError, TypeError, KeyError, IndexError,
     OverflowError, Unicode and JSON errors, pyarrow/datasets/jinja2 errors: USER, INVALID_DATA. A dataset
     file gone or unreadable (no errno-level fault): USER, DATASET_UNAVAILABLE.
   - "model" (loading the tokenizer, config and weights): an OSError without an errno (transformers' "cannot
     load") is USER MODEL_UNAVAILABLE; ValueError/KeyError/TypeError (an architecture without the task's
     head, a config it cannot take) is USER MODEL_UNSUPPORTED.
   - "config" (training arguments, trainer construction: seeds, schedulers, option combinations): those
     value errors are USER INVALID_CONFIG; raised from inside `datasets` (the trainer tokenizes there)
     they are INVALID_DATA.
   - "train" and "save": SYSTEM (TRAINING_FAILED, SAVE_FAILED), except a few known data messages.
   The training loop runs on tensors the worker built, so a ValueError there is not the user's; the phases
   before it only read the job's spec, model and data, so the same types there are.

Messages are at most MAX_MESSAGE characters and never quote data: for an exception that is not the
worker's own, only its type, the phase and a row number found in it are reported; the full traceback
(messages cut to a bounded length, no local variables) goes to the job's worker log only.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
import traceback
from pathlib import Path

from tunewire_server.protocol import ErrorKind, JobError
from tunewire_server.worker.runtime import UserError

MAX_MESSAGE = 300
MAX_LOG_LINE = 2000
# A save that fails with less than this free is taken for a full disk: torch.save reports ENOSPC as
# "unexpected pos ..." and safetensors as a SafetensorError, neither an OSError.
NEARLY_FULL_BYTES = 64 << 20
NEARLY_FULL_FRACTION = 0.02

PHASES = ("prepare", "model", "data", "config", "resume", "train", "save")
_WHAT = {
    "prepare": "while preparing the job",
    "model": "while loading the base model",
    "data": "while reading the training data",
    "config": "while setting up training",
    "resume": "while loading a checkpoint",
    "train": "during training",
    "save": "while saving",
}
_USER_TYPES = (ValueError, TypeError, KeyError, IndexError, OverflowError, UnicodeError, json.JSONDecodeError)
_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_MISSING = (errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ELOOP)
_ROW = re.compile(r"\b(row|line)\s+(\d{1,12})\b", re.IGNORECASE)
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def error(code: str, kind: ErrorKind, message: str, field: str = "") -> JobError:
    """The worker's report of a failure: its message cut to MAX_MESSAGE characters on one line."""
    return JobError(code, kind, bound(message), field)


def bound(message: str) -> str:
    message = " ".join(str(message).split())
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def redact(message: str, allowed: set[str] = frozenset()) -> str:
    """Replace every quoted value in a message by '…' unless it is one of `allowed` (names from the spec):
    the worker's own messages quote field and column names, and must not quote data values."""
    def keep(match: re.Match) -> str:
        return match.group(0) if match.group(0)[1:-1] in allowed else "'…'"

    return _QUOTED.sub(keep, message)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes/contexts, outermost first (bounded: chains can loop)."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 10:
        seen.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return seen


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover - the worker always has torch
        pass
    head = str(exc)[:500].lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in head or "can't allocate memory" in head)


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        return True
    text = str(exc)[:2000]
    return "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text


def _is_device(exc: BaseException) -> bool:
    name = type(exc).__name__
    if name in ("AcceleratorError", "DistBackendError", "DistNetworkError"):
        return True
    head = str(exc)[:500]
    return isinstance(exc, RuntimeError) and any(s in head for s in ("CUDA", "NCCL", "cuDNN", "CUBLAS", "cublas"))


def _from_package(exc: BaseException, package: str) -> bool:
    """Whether the exception was raised inside `package` (a frame of its traceback lies in it)."""
    marker = f"/{package}/"
    return any(marker in frame.filename for frame in traceback.extract_tb(exc.__traceback__))


def _is_data_library(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.split(".")[0] in ("datasets", "pyarrow", "jinja2", "pandas", "tokenizers")


def nearly_full(folder: Path | None) -> bool:
    """Whether the filesystem holding `folder` has (almost) no space left."""
    if folder is None:
        return False
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return False
    return usage.free < NEARLY_FULL_BYTES or usage.free < usage.total * NEARLY_FULL_FRACTION


def _row_hint(chain: list[BaseException]) -> str:
    for exc in chain:
        match = _ROW.search(str(exc)[:2000])
        if match:
            return f" ({match.group(1).lower()} {match.group(2)})"
    return ""


def classify(exc: BaseException, phase: str = "train", *, field: str = "", save_dir: Path | None = None,
             allowed: set[str] = frozenset()) -> JobError:
    """The error to report for `exc`, raised while the job was in `phase`.

    `field`: the spec field the phase works on (the dataset's, during "data"); `save_dir`: where the job
    writes (to tell a full disk from another save failure); `allowed`: names a message may quote."""
    chain = _chain(exc)
    own = next((c for c in chain if isinstance(c, UserError)), None)
    if own is not None:
        return error(own.code, "USER", redact(own.message, allowed), own.field)
    what = _WHAT.get(phase, "during training")
    name = type(exc).__name__
    store_error = _artifact_store_error(chain, what)
    if store_error is not None:
        return store_error
    for cause in chain:
        if _is_oom(cause):
            return error("OUT_OF_MEMORY", "SYSTEM", f"out of memory {what} ({type(cause).__name__}); try a smaller "
                         "per_device_train_batch_size or max_length")
        if _is_disk_full(cause):
            return error("DISK_FULL", "SYSTEM", f"the disk is full {what}")
    if phase == "save" and nearly_full(save_dir):
        return error("DISK_FULL", "SYSTEM", f"the disk is full {what} ({name})")
    for cause in chain:
        if _is_device(cause):
            return error("DEVICE_ERROR", "SYSTEM", f"{type(cause).__name__} {what}: {_first_line(cause)}")
    if phase in ("data", "model", "config", "prepare"):
        user = _user_error(exc, chain, phase, field)
        if user is not None:
            return user
    if phase == "train" and isinstance(exc, ValueError) and "Unable to create tensor" in str(exc)[:500]:
        return error("INVALID_DATA", "USER", f"the examples cannot be batched into tensors ({name}); "
                     "check that the text fields hold text", "train_dataset")
    for cause in chain:
        if isinstance(cause, OSError) and cause.errno is not None:
            return error("IO_ERROR", "SYSTEM", f"{type(cause).__name__} {what}: "
                         f"{cause.strerror or errno.errorcode.get(cause.errno, cause.errno)}")
    code = "SAVE_FAILED" if phase == "save" else "TRAINING_FAILED"
    detail = f": {_first_line(exc)}" if phase in ("train", "save", "resume") else ""
    return error(code, "SYSTEM", f"{name} {what}{detail}")


def _artifact_store_error(chain: list[BaseException], what: str) -> JobError | None:
    """The shared artifact store's failures: SYSTEM, so the job's retries retry them."""
    from tunewire_server.artifacts.errors import (
        ArtifactCorrupt,
        ArtifactStoreMisconfigured,
        ArtifactStoreUnavailable,
    )

    codes = ((ArtifactStoreUnavailable, "ARTIFACT_STORE_UNAVAILABLE"),
             (ArtifactStoreMisconfigured, "ARTIFACT_STORE_MISCONFIGURED"), (ArtifactCorrupt, "ARTIFACT_CORRUPT"))
    for cause in chain:
        for cls, code in codes:
            if isinstance(cause, cls):
                return error(code, "SYSTEM", f"the shared artifact store failed {what}: {_first_line(cause, 400)}")
    return None


def _user_error(exc: BaseException, chain: list[BaseException], phase: str, field: str) -> JobError | None:
    name = type(exc).__name__
    what = _WHAT[phase]
    data_like = any(isinstance(c, _USER_TYPES) or _is_data_library(c) for c in chain)
    if phase == "model":
        if isinstance(exc, OSError) and exc.errno is None:
            return error("MODEL_UNAVAILABLE", "USER", f"the base model cannot be loaded ({name})", "base_model")
        if isinstance(exc, (ValueError, KeyError, TypeError)):
            return error("MODEL_UNSUPPORTED", "USER", f"the base model does not fit this task ({name} {what})",
                         "base_model")
        return None
    if phase == "data" or (phase == "config" and _from_package(exc, "datasets")):
        missing = next((c for c in chain if isinstance(c, OSError) and c.errno in _MISSING), None)
        if missing is not None:
            return error("DATASET_UNAVAILABLE", "USER", f"a dataset file cannot be opened "
                         f"({missing.strerror or type(missing).__name__})", field)
        if data_like:
            return error("INVALID_DATA", "USER", f"the data cannot be used: {name} {what}{_row_hint(chain)}", field)
        return None
    if isinstance(exc, _USER_TYPES) or _is_data_library(exc):
        return error("INVALID_CONFIG", "USER", f"the job's settings cannot be used: {name} {what}: "
                     f"{_first_line(exc, 160)}")
    return None


def _first_line(exc: BaseException, limit: int = 200) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]


def format_traceback(exc: BaseException) -> str:
    """The traceback for the worker log: no local variables, each line cut to MAX_LOG_LINE characters
    (an exception message may hold a whole row)."""
    lines = traceback.TracebackException.from_exception(exc, capture_locals=False).format()
    out = []
    for chunk in lines:
        for line in chunk.splitlines():
            out.append(line if len(line) <= MAX_LOG_LINE else line[:MAX_LOG_LINE] + f"… ({len(line)} chars)")
    return "\n".join(out)
