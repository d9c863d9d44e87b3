"""resources.py: new work is refused while the data disk has less free space than min_free_disk_mb."""

from __future__ import annotations

import shutil

import pytest

from tunewire_server.errors import ResourceExhausted
from tunewire_server.resources import MB, check_free_disk


def test_enough_free_space_passes(tmp_path):
    check_free_disk(tmp_path, 1)


def test_too_little_free_space_is_resource_exhausted_naming_the_setting(tmp_path):
    wanted = shutil.disk_usage(tmp_path).free // MB + 1024 * 1024  # a terabyte more than there is
    with pytest.raises(ResourceExhausted, match=rf"below the {wanted} MB .*\(min_free_disk_mb\)"):
        check_free_disk(tmp_path, wanted)


def test_zero_turns_the_check_off(tmp_path):
    check_free_disk(tmp_path / "does-not-exist", 0)
    check_free_disk(tmp_path, 0)


def test_a_path_that_cannot_be_measured_is_left_to_the_write_that_follows(tmp_path):
    check_free_disk(tmp_path / "does-not-exist", 10**12)
