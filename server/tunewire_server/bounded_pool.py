"""A thread pool that never queues: a caller waits a bounded time for a free thread, then gives up.

Submitted jobs are checked (files opened and read) on one of these, apart from the event loop's default
executor and the store's writer: a check that hangs holds its own thread only, and once every thread is
held, submits are refused after the timeout while every other call goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class PoolBusy(Exception):
    """No thread came free, or the call did not finish, within the timeout."""


class BoundedPool:
    def __init__(self, threads: int, name: str) -> None:
        self.threads = threads
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._free: asyncio.Semaphore | None = None  # made on first use, on the loop that uses it

    async def run(self, fn: Callable[..., T], *args, timeout: float) -> T:
        """fn(*args) on a free thread of this pool. Raises PoolBusy after `timeout` seconds in all; a call
        that overran keeps its thread until it returns, and the thread is counted busy until then."""
        if self._free is None:
            self._free = asyncio.Semaphore(self.threads)
        deadline = time.monotonic() + timeout
        try:
            await asyncio.wait_for(self._free.acquire(), timeout)
        except TimeoutError:
            raise PoolBusy(f"all {self.threads} threads stayed busy for {timeout:g} s") from None
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except BaseException:
            self._free.release()
            raise
        future.add_done_callback(lambda _: self._free.release())
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            future.add_done_callback(_consume)
            raise PoolBusy(f"the call took longer than {timeout:g} s") from None

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _consume(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: an overrun call's error is not logged as "never retrieved"
