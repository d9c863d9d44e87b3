"""SDK exceptions. Every failed call raises a TunewireError subclass instead of a raw grpc.RpcError."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_DETAILS_KEY = "grpc-status-details-bin"
_BAD_REQUEST_URL = "type.googleapis.com/google.rpc.BadRequest"


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


def _rich_status_classes():
    """google.rpc.Status and BadRequest, built in a private pool.

    The SDK depends on grpcio and protobuf only, so it cannot import googleapis-common-protos; a
    private pool also cannot clash with that package when both are loaded in one process.
    """
    any_file = descriptor_pb2.FileDescriptorProto(name="google/protobuf/any.proto", package="google.protobuf",
                                                  syntax="proto3")
    any_msg = any_file.message_type.add(name="Any")
    any_msg.field.add(name="type_url", number=1, type=9, label=1)
    any_msg.field.add(name="value", number=2, type=12, label=1)
    rpc = descriptor_pb2.FileDescriptorProto(name="tunewire/_rpc_status.proto", package="google.rpc",
                                             syntax="proto3", dependency=["google/protobuf/any.proto"])
    status = rpc.message_type.add(name="Status")
    status.field.add(name="code", number=1, type=5, label=1)
    status.field.add(name="message", number=2, type=9, label=1)
    status.field.add(name="details", number=3, type=11, label=3, type_name=".google.protobuf.Any")
    bad = rpc.message_type.add(name="BadRequest")
    fv = bad.nested_type.add(name="FieldViolation")
    fv.field.add(name="field", number=1, type=9, label=1)
    fv.field.add(name="description", number=2, type=9, label=1)
    bad.field.add(name="field_violations", number=1, type=11, label=3,
                  type_name=".google.rpc.BadRequest.FieldViolation")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(any_file)
    pool.Add(rpc)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.BadRequest")))


_Status, _BadRequest = _rich_status_classes()


def field_violations(trailing_metadata) -> tuple[FieldViolation, ...]:
    for key, value in trailing_metadata or ():
        if key == _DETAILS_KEY:
            status = _Status.FromString(value)
            out = []
            for detail in status.details:
                if detail.type_url == _BAD_REQUEST_URL:
                    bad = _BadRequest.FromString(detail.value)
                    out += [FieldViolation(v.field, v.description) for v in bad.field_violations]
            return tuple(out)
    return ()


def from_rpc_error(exc: grpc.RpcError) -> TunewireError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    cls = _BY_CODE.get(code, TunewireError)
    return cls(details or str(code), code, field_violations(trailers))
