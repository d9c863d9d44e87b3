"""Artifact keys: clean relative paths, joined and compared by whole segments."""

from __future__ import annotations

import pytest

from tunewire_server.artifacts.errors import ArtifactKeyError
from tunewire_server.artifacts.keys import check_key, is_under, join_key


def test_a_clean_key_comes_back_without_outer_slashes():
    assert check_key("jobs/j1/model") == "jobs/j1/model"
    assert check_key("jobs/j1/model/") == "jobs/j1/model"
    assert check_key("", allow_empty=True) == ""


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", "a//b", "./a", "a\\b", "a\x00b", "x" * 1025, 7])
def test_unclean_keys_are_refused(key):
    with pytest.raises(ArtifactKeyError):
        check_key(key)


def test_join_skips_empty_parts_and_checks_each():
    assert join_key("jobs", "", "j1/", "model") == "jobs/j1/model"
    with pytest.raises(ArtifactKeyError):
        join_key("jobs", "..", "x")


def test_under_is_by_whole_segments():
    assert is_under("jobs/a/model", "jobs/a")
    assert is_under("jobs/a", "jobs/a")
    assert is_under("anything", "")
    assert not is_under("jobs/ab/model", "jobs/a")
