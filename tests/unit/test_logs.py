"""Log lines stay small and carry no request data: no locals in tracebacks, long values cut."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Run in a child: structlog's configuration is process-wide, and the renderer writes to fd 2.
SCRIPT = textwrap.dedent("""
    import sys
    import structlog
    from tunewire_server import logs

    logs.configure(sys.argv[1])
    log = structlog.get_logger("test")

    def train(rows):
        training_text = "ROW-TEXT-" * 120_000  # a 1 MB local, as a frame holding inline rows has
        raise ValueError("could not parse row " + rows[0])

    try:
        train(["QUOTED-" * 150_000])
    except ValueError:
        log.exception("job supervision failed", job_id="j1")
    log.info("request", display_name="NAME-" * 200_000, rows=["LISTED-" * 150_000])

    import logging  # a library's stdlib logging goes through the same bounds
    try:
        train(["STDLIB-" * 150_000])
    except ValueError:
        logging.getLogger("grpc._cython.cygrpc").exception("Unexpected error in " + "METHOD-" * 100_000)
""")


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_a_logged_exception_prints_no_locals_and_every_line_is_bounded(fmt):
    result = subprocess.run([sys.executable, "-c", SCRIPT, fmt], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    err = result.stderr
    assert "job supervision failed" in err and "ValueError: could not parse row" in err  # the error is there
    assert "Traceback (most recent call last)" in err and "in train" in err
    assert "ROW-TEXT-" not in err  # no local variables
    # a value quoted in an exception message and long event values are cut to a bounded prefix
    assert err.count("QUOTED-") < 200 and err.count("NAME-") < 500 and err.count("LISTED-") < 400
    assert "Unexpected error in METHOD-" in err and "grpc._cython.cygrpc" in err
    assert err.count("STDLIB-") < 200 and err.count("METHOD-") < 500
    assert len(err) < 20_000, len(err)
    assert max(len(line) for line in err.splitlines()) < 16_000
