"""The warm pool (workers/pool.py) over the scheduler tests' fake launcher: scripted workers, no processes."""

from __future__ import annotations

import asyncio

from tests.unit.test_scheduler import READY, REQUEST, SUCCESS, Exit, FakeLauncher, Gate
from tunewire_server.workers.pool import IDLE_DEATHS, WarmPool, WorkerStartFailed

DIES_IDLE = [READY, Exit(-11)]  # ready, then killed while it waits for a job
NEVER_READY = [Exit(1)]


async def settle(pool: WarmPool) -> None:
    """Let the pool's tasks (start, watch, replace) run until nothing changes."""
    for _ in range(50):
        await asyncio.sleep(0)


async def test_a_warm_worker_that_dies_while_idle_is_replaced(tmp_path):
    launcher = FakeLauncher(DIES_IDLE, default=SUCCESS)
    pool = WarmPool(launcher, tmp_path / "warm.log")
    pool.ensure_warm()
    await settle(pool)
    assert len(launcher.workers) == 2  # the first died idle; a second was started in its place
    taken = await pool.take(tmp_path / "job.log")
    assert taken is launcher.workers[1]
    assert len(launcher.workers) == 2  # the replacement was ready: no fresh start for the job
    await pool.close()


async def test_warm_workers_that_keep_dying_are_not_restarted_forever(tmp_path):
    launcher = FakeLauncher(default=DIES_IDLE)
    pool = WarmPool(launcher, tmp_path / "warm.log")
    pool.ensure_warm()
    await settle(pool)
    assert len(launcher.workers) == IDLE_DEATHS
    await pool.close()


async def test_a_job_gets_a_fresh_worker_when_the_warm_one_never_became_ready(tmp_path):
    launcher = FakeLauncher(NEVER_READY, default=[READY, REQUEST, Exit(0)])
    pool = WarmPool(launcher, tmp_path / "warm.log")
    pool.ensure_warm()
    await settle(pool)
    taken = await pool.take(tmp_path / "job.log")
    assert taken is launcher.workers[1]
    await pool.close()


async def test_close_kills_a_warm_worker_still_starting_instead_of_waiting_for_it(tmp_path):
    launcher = FakeLauncher([Gate(asyncio.Event()), READY])  # its imports never end
    pool = WarmPool(launcher, tmp_path / "warm.log")
    pool.ensure_warm()
    await settle(pool)
    closing = asyncio.create_task(pool.close())
    await settle(pool)
    assert closing.done()  # without waiting for imports that never end
    assert await launcher.workers[0].wait() == -9


async def test_take_gives_up_after_start_tries_fresh_workers_fail(tmp_path):
    launcher = FakeLauncher(default=NEVER_READY)
    pool = WarmPool(launcher, tmp_path / "warm.log", enabled=False)
    try:
        await pool.take(tmp_path / "job.log")
    except WorkerStartFailed:
        pass
    else:
        raise AssertionError("take() should fail when every fresh worker exits before ready")
    assert len(launcher.workers) == 2
    await pool.close()


async def test_wait_ready_returns_once_the_warm_worker_is_ready_and_at_once_when_warming_is_off(tmp_path):
    gate = asyncio.Event()
    launcher = FakeLauncher([Gate(gate), *SUCCESS], default=SUCCESS)
    pool = WarmPool(launcher, tmp_path / "warm.log")
    waiting = asyncio.create_task(pool.wait_ready())
    await settle(pool)
    assert not waiting.done()  # still importing: a replica claims nothing yet
    gate.set()
    await asyncio.wait_for(waiting, 5)
    assert await pool.take(tmp_path / "job.log") is launcher.workers[0]
    await pool.close()

    off = WarmPool(FakeLauncher(default=SUCCESS), tmp_path / "off.log", enabled=False)
    await asyncio.wait_for(off.wait_ready(), 1)


async def test_wait_ready_returns_when_the_warm_worker_fails_to_start(tmp_path):
    launcher = FakeLauncher(NEVER_READY, default=[READY, REQUEST, Exit(0)])
    pool = WarmPool(launcher, tmp_path / "warm.log")
    await asyncio.wait_for(pool.wait_ready(), 5)
    assert await pool.take(tmp_path / "job.log") is launcher.workers[1]  # the job starts its own
    await pool.close()
