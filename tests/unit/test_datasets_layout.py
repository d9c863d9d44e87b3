"""tunewire_server.datasets.layout: ids, the checks of client-chosen names, and where stored files are found."""

from __future__ import annotations

import pytest

from tunewire_server.datasets import layout
from tunewire_server.errors import InvalidSpec


@pytest.mark.parametrize("name", ["", "a/b", "a\\b", "../x", "a\x00b", "a\nb", ".", "..", "x" * 256])
def test_names_that_are_not_file_names_are_refused(name):
    with pytest.raises(InvalidSpec) as info:
        layout.check_name(name)
    assert info.value.violations[0].field == "header.name"
    assert len(info.value.message) < 200  # a long name is not quoted whole


@pytest.mark.parametrize("name", ["train.jsonl", "my data (v2).csv", "café.tsv", ".hidden.parquet"])
def test_ordinary_file_names_are_taken(name):
    assert layout.check_name(name) == name


@pytest.mark.parametrize("value", ["", "ds-" + "0" * 63, "ds-" + "G" * 64, "DS-" + "0" * 64, "../" + "0" * 64])
def test_only_ids_this_server_issues_are_dataset_ids(value):
    with pytest.raises(InvalidSpec):
        layout.check_dataset_id(value)
    assert layout.check_dataset_id("ds-" + "0a" * 32) == "ds-" + "0a" * 32


@pytest.mark.parametrize("value", ["", ".", "..", "a/b", "a b", "é", "x" * 129])
def test_upload_ids_are_safe_file_names(value):
    with pytest.raises(InvalidSpec):
        layout.check_upload_id(value)


def test_the_format_is_declared_or_told_by_the_extension():
    assert layout.format_of("x.JSON", None) == "jsonl" and layout.format_of("x.txt", "csv") == "csv"
    with pytest.raises(InvalidSpec):
        layout.format_of("x.txt", None)
    assert layout.check_sha256("AB" * 32) == "ab" * 32


def test_a_stored_file_is_found_by_its_id(tmp_path):
    sha = "c" * 64
    assert layout.find_stored(tmp_path, layout.dataset_id(sha)) is None
    layout.datasets_dir(tmp_path).mkdir()
    (layout.datasets_dir(tmp_path) / layout.stored_file_name(sha, "tsv")).write_text("a\n1\n")
    assert layout.find_stored(tmp_path, layout.dataset_id(sha)) == (f"{sha}.tsv", "tsv")
