"""The training worker's answer to the control plane's signals before its job starts training."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from tunewire_server.workers import CHECKPOINT_SIGNAL, STOP_SIGNAL, WorkerProcess


@pytest.mark.parametrize("gap_s", [0.0, 0.002])
def test_a_cancel_then_a_shutdown_end_a_waiting_worker_at_once_and_cleanly(tmp_path, gap_s):
    """A cancel (STOP) and the server's shutdown (CHECKPOINT) land together. The first ends the worker even
    when the kernel hands it to one of torch's threads; the second must not interrupt that exit with
    another Cancelled (exit 1 and a traceback)."""
    log = tmp_path / "worker.log"

    async def scenario() -> int:
        worker = await WorkerProcess.start("tunewire_server.worker.training", log, tmp_path / "cwd",
                                           {"TUNEWIRE_TORCH_THREADS": "1"})
        assert (await worker.receive())["kind"] == "ready"  # now waiting for its job on stdin
        os.killpg(worker.pid, STOP_SIGNAL)
        time.sleep(gap_s)
        os.killpg(worker.pid, CHECKPOINT_SIGNAL)
        try:
            return await asyncio.wait_for(worker.wait(), 10)
        finally:
            worker.kill()

    assert asyncio.run(scenario()) == 0
    assert "Traceback" not in log.read_text()
