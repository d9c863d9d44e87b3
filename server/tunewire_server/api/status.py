"""The one place domain errors become gRPC status codes, with rich details for field violations."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from tunewire_server import errors

CODES: dict[type[errors.TunewireError], grpc.StatusCode] = {
    errors.InvalidSpec: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def to_status(exc: BaseException) -> grpc.Status:
    """A domain error keeps its message; anything else is INTERNAL with a message that leaks nothing."""
    code = grpc.StatusCode.INTERNAL
    message = "internal error; the server log has the details"
    if isinstance(exc, errors.TunewireError):
        code = next((c for t, c in CODES.items() if isinstance(exc, t)), grpc.StatusCode.INTERNAL)
        message = exc.message
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    if isinstance(exc, errors.InvalidSpec):
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in exc.violations
        ]))
        status.details.append(detail)
    return rpc_status.to_status(status)
