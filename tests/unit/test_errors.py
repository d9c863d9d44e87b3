"""errors.py: the domain errors and `preview`, the one way a message quotes a client's value."""

from __future__ import annotations

import pytest

from tunewire_server import errors
from tunewire_server.errors import FieldViolation, InvalidSpec, preview


def test_a_short_value_is_quoted_whole_as_its_repr():
    assert preview("abc") == "'abc'"
    assert preview(42) == "42"
    assert preview(None) == "None"


def test_a_long_string_is_cut_to_a_prefix_and_its_length_told():
    text = preview("x" * 1_000_000)
    assert text == f"{'x' * errors.PREVIEW_CHARS!r}... (1000000 characters)"
    assert len(text) < 80


def test_long_bytes_say_bytes():
    assert preview(b"\x00" * 100, 4) == r"b'\x00\x00\x00\x00'... (100 bytes)"


def test_control_characters_are_escaped_never_sent_raw():
    text = preview("a\nb\x1b[31m")
    assert "\n" not in text and "\x1b" not in text
    assert text == repr("a\nb\x1b[31m")


def test_a_long_value_of_another_type_is_cut_after_its_repr():
    text = preview(list(range(1000)), 10)
    assert text == repr(list(range(1000)))[:10] + "..."


def test_invalid_spec_names_the_first_field_and_counts_the_rest():
    one = InvalidSpec(FieldViolation("hyperparameters.learning_rate", "must be positive"))
    assert one.message == "hyperparameters.learning_rate: must be positive"
    assert one.violations == [FieldViolation("hyperparameters.learning_rate", "must be positive")]
    three = InvalidSpec([FieldViolation("a", "x"), FieldViolation("b", "y"), FieldViolation("c", "z")])
    assert str(three) == "a: x (and 2 more)"
    assert [v.field for v in three.violations] == ["a", "b", "c"]


@pytest.mark.parametrize("cls", [errors.NotFound, errors.FailedPrecondition, errors.ResourceExhausted,
                                 errors.AlreadyExists, errors.Unavailable])
def test_every_domain_error_is_a_tunewire_error_with_its_message(cls):
    exc = cls("job 'x' not found")
    assert isinstance(exc, errors.TunewireError)
    assert exc.message == str(exc) == "job 'x' not found"
