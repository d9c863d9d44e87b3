"""structlog set-up: readable console lines in development, JSON lines in production.

Logs never carry request data. Tracebacks are plain (no local variables: a frame's locals can hold a
client's training rows or a token), and every value is cut to a bounded length, so one log line stays
small whatever a request held.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

MAX_VALUE_CHARS = 2_000  # one field of a log line (the event, a key's value)
MAX_TRACEBACK_LINE_CHARS = 500  # one line of a traceback (an exception message quoting a value)
MAX_TRACEBACK_CHARS = 16_000  # a whole traceback: its head and its tail (where the error is) are kept


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[{len(text) - limit} more chars cut]"


def _cut_traceback(text: str) -> str:
    text = "\n".join(_cut(line, MAX_TRACEBACK_LINE_CHARS) for line in text.splitlines())
    if len(text) <= MAX_TRACEBACK_CHARS:
        return text
    half = MAX_TRACEBACK_CHARS // 2
    return f"{text[:half]}\n…[{len(text) - 2 * half} chars cut]…\n{text[-half:]}"


def bound_values(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Cut every value to a bounded length (after the traceback has been formatted as text)."""
    for key, value in event_dict.items():
        if key == "exception" and isinstance(value, str):
            event_dict[key] = _cut_traceback(value)
        elif isinstance(value, str):
            event_dict[key] = _cut(value, MAX_VALUE_CHARS)
        elif not isinstance(value, int | float | bool | type(None)):
            text = repr(value)  # containers and objects: rendered as their repr anyway when long
            if len(text) > MAX_VALUE_CHARS:
                event_dict[key] = _cut(text, MAX_VALUE_CHARS)
    return event_dict


def _renderer(fmt: str):
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)


# Every record, structlog's or a library's stdlib one, ends the same way: the exception formatted as a
# plain traceback without locals (structlog's ExceptionRenderer with its default formatter), then the
# values bounded, then rendered. The console renderer's own formatter (rich, locals shown) is never
# reached: by then the exception is text.
_STAMP = [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)]
_TAIL = [structlog.processors.ExceptionRenderer(), bound_values]


def configure(fmt: str = "console", level: str = "info") -> None:
    renderer = _renderer(fmt)
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *_STAMP, structlog.dev.set_exc_info, *_TAIL, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries' stdlib logging (grpc's "unexpected error" with a traceback, ...): the same format and
    # the same bounds, instead of the unbounded lastResort handler.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *_STAMP],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_TAIL, renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.WARNING, getattr(logging, level.upper())))
