"""api/status.py: the one table from domain errors to gRPC status codes, with field violations as rich
details (google.rpc.BadRequest) and every part cut to fit gRPC's metadata limits."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from tunewire_server import errors
from tunewire_server.api import status
from tunewire_server.errors import FieldViolation, InvalidSpec


def details_of(st: grpc.Status) -> status_pb2.Status:
    return status_pb2.Status.FromString(dict(st.trailing_metadata)["grpc-status-details-bin"])


@pytest.mark.parametrize("exc,code", [
    (InvalidSpec(FieldViolation("f", "bad")), grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound("job 'x' not found"), grpc.StatusCode.NOT_FOUND),
    (errors.FailedPrecondition("not yet"), grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ResourceExhausted("queue full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.AlreadyExists("same request id"), grpc.StatusCode.ALREADY_EXISTS),
    (errors.Unavailable("shutting down"), grpc.StatusCode.UNAVAILABLE),
])
def test_each_domain_error_has_its_code_and_keeps_its_message(exc, code):
    st = status.to_status(exc)
    assert st.code == code
    assert st.details == exc.message
    assert details_of(st).code == getattr(code_pb2, code.name)


def test_every_domain_error_class_is_in_the_table():
    domain = {cls for cls in vars(errors).values()
              if isinstance(cls, type) and issubclass(cls, errors.TunewireError) and cls is not errors.TunewireError}
    assert domain == set(status.CODES)


def test_a_subclass_gets_its_parents_code():
    class QueueFull(errors.ResourceExhausted):
        pass

    assert status.to_status(QueueFull("full")).code == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("exc", [RuntimeError("secret /data/path and token abc"), KeyError("sk-123")])
def test_anything_else_is_internal_and_leaks_nothing(exc):
    st = status.to_status(exc)
    assert st.code == grpc.StatusCode.INTERNAL
    assert st.details == "internal error; the server log has the details"


def test_the_base_domain_error_is_internal_but_keeps_its_message():
    st = status.to_status(errors.TunewireError("written for the client"))
    assert (st.code, st.details) == (grpc.StatusCode.INTERNAL, "written for the client")


def test_a_long_message_is_cut_to_its_byte_budget():
    st = status.to_status(errors.NotFound("x" * 100_000))
    assert len(st.details.encode()) <= status.MAX_MESSAGE_BYTES and st.details.endswith("...")


def test_field_violations_travel_as_bad_request_details_in_order():
    st = status.to_status(InvalidSpec([FieldViolation("base_model", "is required"),
                                       FieldViolation("hyperparameters.learning_rate", "must be positive")]))
    (detail,) = details_of(st).details
    bad = error_details_pb2.BadRequest()
    assert detail.Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("base_model", "is required"), ("hyperparameters.learning_rate", "must be positive")]


def test_violations_past_the_details_budget_are_counted_not_sent():
    many = [FieldViolation(f"rows[{i}].text", "d" * 200) for i in range(100)]
    bad = error_details_pb2.BadRequest()
    details_of(status.to_status(InvalidSpec(many))).details[0].Unpack(bad)
    shown = len(bad.field_violations) - 1
    assert 0 < shown < 100
    assert bad.field_violations[-1].field == "request"
    assert bad.field_violations[-1].description == f"{100 - shown} more problems not shown"


def test_cut_keeps_short_text_and_cuts_long_text_on_a_character_boundary():
    assert status.cut("plain", 10) == "plain"
    cut = status.cut("é" * 100, 10)  # 2 bytes a character
    assert cut == "ééé..." and len(cut.encode()) <= 10


def test_cut_replaces_a_lone_surrogate_which_cannot_go_on_the_wire():
    assert status.cut("a\ud800b", 10) == "a?b"
