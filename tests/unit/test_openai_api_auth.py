"""openai_api.auth: the bearer token of the Authorization header, compared against the accepted ones."""

from __future__ import annotations

from tunewire_server.openai_api.auth import BearerAuth, token_of


def test_the_token_is_read_from_a_bearer_header_only():
    assert token_of("Bearer abc ") == "abc" and token_of("bearer abc") == "abc"
    assert token_of("Basic abc") == "" and token_of("") == ""


def test_only_an_accepted_token_passes():
    auth = BearerAuth(app=None, tokens=["one", "two"])
    assert auth.accepted("two") and not auth.accepted("three") and not auth.accepted("")
