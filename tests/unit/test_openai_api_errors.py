"""openai_api.errors: domain errors as OpenAI's error shape with the status the openai client maps."""

from __future__ import annotations

import json

import pytest

from tunewire_server import errors
from tunewire_server.openai_api.errors import NotImplementedYet, Unauthenticated, error_response


@pytest.mark.parametrize(("exc", "status", "type_"), [
    (errors.InvalidSpec(errors.FieldViolation("training_file", "bad")), 400, "invalid_request_error"),
    (errors.NotFound("no job"), 404, "invalid_request_error"),
    (errors.FailedPrecondition("not yet"), 409, "invalid_request_error"),
    (errors.AlreadyExists("again"), 409, "invalid_request_error"),
    (errors.ResourceExhausted("busy"), 429, "rate_limit_error"),
    (errors.Unavailable("down"), 503, "server_error"),
    (Unauthenticated("who"), 401, "authentication_error"),
    (NotImplementedYet("later"), 501, "server_error"),
    (errors.TunewireError("odd"), 500, "server_error"),
])
def test_domain_errors_map_to_status_and_type(exc, status, type_):
    response = error_response(exc)
    body = json.loads(response.body)["error"]
    assert response.status_code == status and body["type"] == type_ and body["message"] == exc.message
    assert set(body) == {"message", "type", "param", "code"}
    if isinstance(exc, errors.InvalidSpec):
        assert body["param"] == "training_file"


def test_an_unexpected_error_leaks_nothing():
    response = error_response(RuntimeError("secret path /etc/x"))
    assert response.status_code == 500 and "secret" not in response.body.decode()
