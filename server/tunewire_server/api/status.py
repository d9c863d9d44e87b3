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

# Bounds on what one status carries, whatever a caller raised: gRPC sends the message (percent-encoded)
# and the details (base64) as trailing metadata, and a client refuses metadata above 8 KiB ("received
# metadata size exceeds hard limit"), so a long message would turn a clear answer into RESOURCE_EXHAUSTED.
MAX_MESSAGE_BYTES = 512  # the status message, in UTF-8 bytes
MAX_FIELD_BYTES = 128  # a field violation's field path
MAX_DESCRIPTION_BYTES = 256  # a field violation's description
MAX_DETAILS_BYTES = 2048  # all field violations together, serialized; the rest are counted, not sent


def cut(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes (on a character boundary), marked with "..." when cut."""
    data = text.encode("utf-8", "replace")  # a lone surrogate becomes "?": it cannot go on the wire
    if len(data) <= limit:
        return data.decode("utf-8")
    return data[:limit - 3].decode("utf-8", "ignore") + "..."


def _violations(violations) -> list:
    out, size = [], 0
    for i, v in enumerate(violations):
        item = error_details_pb2.BadRequest.FieldViolation(field=cut(str(v.field), MAX_FIELD_BYTES),
                                                           description=cut(str(v.description), MAX_DESCRIPTION_BYTES))
        size += item.ByteSize() + 4
        if size > MAX_DETAILS_BYTES:
            out.append(error_details_pb2.BadRequest.FieldViolation(
                field="request", description=f"{len(violations) - i} more problems not shown"))
            break
        out.append(item)
    return out


def to_status(exc: BaseException) -> grpc.Status:
    """A domain error keeps its message; anything else is INTERNAL with a message that leaks nothing."""
    code = grpc.StatusCode.INTERNAL
    message = "internal error; the server log has the details"
    if isinstance(exc, errors.TunewireError):
        code = next((c for t, c in CODES.items() if isinstance(exc, t)), grpc.StatusCode.INTERNAL)
        message = cut(str(exc.message), MAX_MESSAGE_BYTES)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    if isinstance(exc, errors.InvalidSpec):
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=_violations(exc.violations)))
        status.details.append(detail)
    return rpc_status.to_status(status)
