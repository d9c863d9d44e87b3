"""Predict's generation parameters: parsed from the request and checked before a model sees them.

A leaf: standard library only, so the inference worker (worker/generation.py) and the control plane
(workers/inference.py) import it without pulling in the rest of validation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

DEFAULT_MAX_NEW_TOKENS = 64
MAX_NEW_TOKENS = 4096
MAX_STOP_SEQUENCES = 16
MAX_STOP_CHARS = 256
# Sampling temperature. generate() divides the logits (upcast to float32) by it before the softmax: at
# 1e-300 a logit of 1 becomes inf and the probabilities NaN ("probability tensor contains inf/nan"). At
# 1e-2 logits up to ±650 stay finite even in float16 (max 65504), and a logit gap of 0.1 already
# becomes 10 (e^-10 odds): sampling is as good as greedy, which is what do_sample=false gives.
MIN_TEMPERATURE = 1e-2
MAX_TEMPERATURE = 100.0
MAX_TOP_K = 1_000_000  # beyond any vocabulary; generate() caps top_k at the vocabulary size anyway


class GenerationRequestError(ValueError):
    """A request the model cannot serve; `field` names the request field at fault."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message, self.field = message, field


@dataclass
class GenerationParams:
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    @classmethod
    def from_request(cls, params: dict | None) -> GenerationParams:
        """From GenerationParams as protobuf JSON (int64 seed arrives as a string); checks every value.

        Bounds: max_new_tokens 1..MAX_NEW_TOKENS; temperature MIN_TEMPERATURE..MAX_TEMPERATURE; top_p in
        (0, 1]; top_k 0 (off)..MAX_TOP_K; seed what torch.manual_seed takes (-2**63..2**64-1); at most
        MAX_STOP_SEQUENCES stop sequences of at most MAX_STOP_CHARS characters each."""
        params = params or {}
        if not isinstance(params, dict):
            raise GenerationRequestError("must be an object", "generation")
        f = "generation."
        stop = params.get("stop_sequences") or []
        if not isinstance(stop, list):
            raise GenerationRequestError("must be a list of strings", f + "stop_sequences")
        p = cls(do_sample=params.get("do_sample", False) is True, stop=list(stop))
        if "max_new_tokens" in params:
            p.max_new_tokens = _integer(params["max_new_tokens"], f + "max_new_tokens")
            if not 1 <= p.max_new_tokens <= MAX_NEW_TOKENS:
                raise GenerationRequestError(f"must be between 1 and {MAX_NEW_TOKENS}", f + "max_new_tokens")
        for name in ("temperature", "top_p", "top_k"):
            if name in params and not p.do_sample:
                raise GenerationRequestError("applies only when sampling: set do_sample", f + name)
        if "temperature" in params:
            p.temperature = _number(params["temperature"], f + "temperature")
            if not MIN_TEMPERATURE <= p.temperature <= MAX_TEMPERATURE:
                raise GenerationRequestError(
                    f"must be between {MIN_TEMPERATURE:g} and {MAX_TEMPERATURE:g}; below {MIN_TEMPERATURE:g} "
                    "the logits divided by it can overflow, and sampling is greedy anyway: for the most likely "
                    "text, leave do_sample off", f + "temperature")
        if "top_p" in params:
            p.top_p = _number(params["top_p"], f + "top_p")
            if not 0 < p.top_p <= 1:
                raise GenerationRequestError("must be in (0, 1]", f + "top_p")
        if "top_k" in params:
            p.top_k = _integer(params["top_k"], f + "top_k")  # 0 = no top-k filtering
            if not 0 <= p.top_k <= MAX_TOP_K:
                raise GenerationRequestError(f"must be between 0 (off) and {MAX_TOP_K}", f + "top_k")
        if "seed" in params:
            p.seed = _integer(params["seed"], f + "seed")
            if not -(2**63) <= p.seed < 2**64:
                raise GenerationRequestError("must be between -2**63 and 2**64-1", f + "seed")
        if len(p.stop) > MAX_STOP_SEQUENCES:
            raise GenerationRequestError(f"at most {MAX_STOP_SEQUENCES} stop sequences", f + "stop_sequences")
        for i, s in enumerate(p.stop):
            if not isinstance(s, str) or not s:
                raise GenerationRequestError("a stop sequence must not be empty", f"{f}stop_sequences[{i}]")
            if len(s) > MAX_STOP_CHARS:
                raise GenerationRequestError(f"a stop sequence has at most {MAX_STOP_CHARS} characters",
                                             f"{f}stop_sequences[{i}]")
            if "\x00" in s:
                raise GenerationRequestError("a stop sequence must not contain NUL", f"{f}stop_sequences[{i}]")
        return p


def _integer(value, field: str) -> int:
    """An integer from protobuf JSON: a number without a fraction, or (int64) a decimal string."""
    if isinstance(value, bool):
        raise GenerationRequestError("must be an integer", field)
    if isinstance(value, str):
        if len(value) > 24 or not re.fullmatch(r"-?[0-9]+", value):
            raise GenerationRequestError("must be an integer", field)
        return int(value)
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise GenerationRequestError("must be an integer", field)
        return int(value)
    if isinstance(value, int):
        return value
    raise GenerationRequestError("must be an integer", field)


def _number(value, field: str) -> float:
    """A finite float from protobuf JSON (which writes NaN and infinities as strings)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise GenerationRequestError("must be a number", field)
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise GenerationRequestError("must be a number", field) from None
    if not math.isfinite(number):
        raise GenerationRequestError(f"must be a finite number, got {number}", field)
    return number
