"""malloc.tune: glibc's thresholds set once at the server's start, unless the environment sets them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CALL = "from tunewire_server import malloc; print(malloc.tune())"


def _tune_in_child(**env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env
    return subprocess.run([sys.executable, "-c", CALL], capture_output=True, text=True, env=environment,
                          check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_thresholds_are_set_on_linux():
    assert _tune_in_child() == "True"


def test_the_environment_wins():
    assert _tune_in_child(MALLOC_MMAP_THRESHOLD_="131072") == "False"
