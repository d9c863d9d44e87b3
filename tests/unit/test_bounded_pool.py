"""The validation pool: a bounded wait for a free thread, then a clear refusal (bounded_pool.py)."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tunewire_server.bounded_pool import BoundedPool, PoolBusy


def test_a_call_waits_at_most_the_timeout_for_a_thread_held_by_a_hung_call():
    async def main():
        pool = BoundedPool(1, "test-pool")
        release = threading.Event()
        hung = asyncio.create_task(pool.run(release.wait, timeout=0.2))
        with pytest.raises(PoolBusy, match="took longer"):
            await hung  # the hung call itself gives up waiting; its thread stays busy
        with pytest.raises(PoolBusy, match="threads stayed busy"):
            await pool.run(lambda: 1, timeout=0.2)
        release.set()
        assert await pool.run(lambda: 2, timeout=5) == 2  # the thread came back
        pool.shutdown()

    asyncio.run(main())


def test_a_hung_pool_leaves_the_default_executor_alone():
    async def main():
        # a one-thread default executor: one hung call on it would make the to_thread below wait
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))
        pool = BoundedPool(2, "test-pool")
        release = threading.Event()
        hung = [asyncio.create_task(pool.run(release.wait, timeout=30)) for _ in range(2)]
        await asyncio.sleep(0.1)
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 5) == "free"
        release.set()
        assert await asyncio.gather(*hung) == [True, True]
        pool.shutdown()

    asyncio.run(main())


def test_errors_of_the_call_come_back_to_the_caller():
    async def main():
        pool = BoundedPool(1, "test-pool")
        with pytest.raises(ValueError, match="bad"):
            await pool.run(lambda: (_ for _ in ()).throw(ValueError("bad")), timeout=5)
        assert await pool.run(lambda: 3, timeout=5) == 3  # the failed call gave its thread back
        pool.shutdown()

    asyncio.run(main())
