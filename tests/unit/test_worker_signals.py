"""The training worker's answer to the control plane's signals before its job starts training, and the
priority it trains at."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from tunewire_server.protocol import Ready
from tunewire_server.workers.launcher import TRAINING_MODULE, TrainingWorker
from tunewire_server.workers.process import CHECKPOINT_SIGNAL, STOP_SIGNAL, WorkerProcess


@pytest.mark.parametrize("gap_s", [0.0, 0.002])
def test_a_cancel_then_a_shutdown_end_a_waiting_worker_at_once_and_cleanly(tmp_path, gap_s):
    """A cancel (STOP) and the server's shutdown (CHECKPOINT) land together. The first ends the worker even
    when the kernel hands it to one of torch's threads; the second must not interrupt that exit with
    another Cancelled (exit 1 and a traceback)."""
    log = tmp_path / "worker.log"

    async def scenario() -> int:
        worker = TrainingWorker(await WorkerProcess.start(TRAINING_MODULE, log, tmp_path / "cwd",
                                                          {"TUNEWIRE_TORCH_THREADS": "1"}))
        assert isinstance(await worker.receive(), Ready)  # now waiting for its job on stdin
        os.killpg(worker.pid, STOP_SIGNAL)
        time.sleep(gap_s)
        os.killpg(worker.pid, CHECKPOINT_SIGNAL)
        try:
            return await asyncio.wait_for(worker.wait(), 10)
        finally:
            worker.kill()

    assert asyncio.run(scenario()) == 0
    assert "Traceback" not in log.read_text()


PRIORITY_PROBE = """
import os
from tunewire_server.worker.training.main import _lower_priority
os.nice({start})
_lower_priority()
try:
    group = open("/proc/self/autogroup").read().split()[-1]
except OSError:
    group = "none"
print(os.nice(0), group)
"""


@pytest.mark.parametrize(("start", "setting", "expected"), [
    (0, "10", 10),  # the worker: lowered to the setting
    (10, "10", 10),  # a DDP rank inherits its worker's 10: absolute, not 20
    (0, "0", 0),  # 0 turns it off
    (15, "10", 15),  # never raised: an unprivileged process could not anyway
])
def test_training_niceness_is_absolute(start, setting, expected):
    """The worker and each DDP rank (which leads a session of its own, so an autogroup of its own) end at
    the setting: niceness ranks processes within a session, autogroup niceness ranks the sessions."""
    env = {**os.environ, "TUNEWIRE_TRAINING_NICENESS": setting}
    # its own session, so the autogroup it lowers is its own and not the test run's
    out = subprocess.run([sys.executable, "-c", PRIORITY_PROBE.format(start=start)], env=env,
                         capture_output=True, text=True, check=True, start_new_session=True, timeout=60)
    niceness, group = out.stdout.split()
    assert int(niceness) == expected
    if group != "none" and setting != "0":  # the session's group is lowered too, a rank's included
        assert int(group) == int(setting)
