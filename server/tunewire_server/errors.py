"""Domain errors. Business logic raises these; `api/status.py` alone maps them to gRPC codes."""

from __future__ import annotations

from dataclasses import dataclass

PREVIEW_CHARS = 40  # the most of a client's value (or a data row's) an error message quotes


def preview(value, n: int = PREVIEW_CHARS) -> str:
    """`repr` of a client's value for an error message, cut to its first `n` characters.

    Every message that quotes a value a client sent (a field, a path, a label, a job id) goes through
    this, so a 1 MB value never comes back inside an error, and control characters are escaped.
    """
    if isinstance(value, (str, bytes)) and len(value) > n:
        return f"{value[:n]!r}... ({len(value)} {'characters' if isinstance(value, str) else 'bytes'})"
    text = repr(value)
    return text if len(text) <= n + 2 else text[:n] + "..."


class TunewireError(Exception):
    """Base class of every error the service reports to a client."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class InvalidSpec(TunewireError):
    """The request is malformed; each violation names the field at fault."""

    def __init__(self, violations: list[FieldViolation] | FieldViolation):
        if isinstance(violations, FieldViolation):
            violations = [violations]
        self.violations = list(violations)
        first = self.violations[0]
        more = f" (and {len(self.violations) - 1} more)" if len(self.violations) > 1 else ""
        super().__init__(f"{first.field}: {first.description}{more}")


class NotFound(TunewireError):
    pass


class FailedPrecondition(TunewireError):
    pass


class ResourceExhausted(TunewireError):
    pass


class AlreadyExists(TunewireError):
    pass


class Unavailable(TunewireError):
    pass
