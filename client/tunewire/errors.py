"""SDK exceptions. Every failed call raises a TunewireError subclass instead of a raw grpc.RpcError."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2  # googleapis-common-protos, as grpcio-status uses

_DETAILS_KEY = "grpc-status-details-bin"  # a serialized google.rpc.Status


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}"


class TunewireError(Exception):
    """A call failed. `code` is the gRPC status code; `violations` names fields at fault, if any."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None,
                 violations: tuple[FieldViolation, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.violations = violations

    def __str__(self) -> str:
        if len(self.violations) > 1:
            return self.message + "\n" + "\n".join(f"  - {v}" for v in self.violations)
        return self.message


class InvalidArgumentError(TunewireError):
    """The request was refused before any work started; see `violations`."""


class NotFoundError(TunewireError):
    pass


class FailedPreconditionError(TunewireError):
    """E.g. Predict on a job that has not succeeded."""


class ResourceExhaustedError(TunewireError):
    """A limit was reached (queue length, message size, concurrent streams)."""


class AlreadyExistsError(TunewireError):
    pass


class UnauthenticatedError(TunewireError):
    pass


class PermissionDeniedError(TunewireError):
    pass


class UnavailableError(TunewireError):
    """The server cannot be reached or is shutting down; retrying later may work."""


class DeadlineExceededError(TunewireError):
    pass


class IntegrityError(TunewireError):
    """A download went wrong at the client: a file did not hash to the sha256 the server announced (the
    partial file is removed), or the server sent what its manifest did not announce."""

    def __init__(self, message: str) -> None:
        super().__init__(message, grpc.StatusCode.DATA_LOSS)


class JobFailedError(TunewireError):
    """Raised by `wait()` when a job ends FAILED or CANCELLED."""

    def __init__(self, job) -> None:
        error = job.error
        reason = f"{error.code}: {error.message}" if error else job.state.value
        super().__init__(f"job {job.id} ended {job.state.value}: {reason}")
        self.job = job


_BY_CODE: dict[grpc.StatusCode, type[TunewireError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}


def field_violations(trailing_metadata) -> tuple[FieldViolation, ...]:
    """The field violations of a google.rpc.BadRequest in the call's rich status details, if any."""
    for key, value in trailing_metadata or ():
        if key == _DETAILS_KEY:
            out = []
            try:
                for detail in status_pb2.Status.FromString(value).details:
                    if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                        bad = error_details_pb2.BadRequest()
                        detail.Unpack(bad)
                        out += [FieldViolation(v.field, v.description) for v in bad.field_violations]
            except DecodeError:  # details that do not parse: the status code and message still stand
                return ()
            return tuple(out)
    return ()


def from_rpc_error(exc: grpc.RpcError) -> TunewireError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    cls = _BY_CODE.get(code, TunewireError)
    return cls(details or str(code), code, field_violations(trailers))
