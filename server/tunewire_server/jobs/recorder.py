"""Stores a running job's progress events in batches, and stops at the first failure to store them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tunewire_server.protocol import Message


class EventRecorder:
    """Stores and publishes a running job's progress events in the order they came, as many to a
    transaction as arrived during the previous one: a fast job's events never queue up behind an fsync
    each, and subscribers see them as soon as the store holds them."""

    def __init__(self, write: Callable[[list[Message]], Awaitable[None]],
                 on_failure: Callable[[Exception], None]) -> None:
        self._write = write
        self._on_failure = on_failure
        self.failure: Exception | None = None  # why storing stopped; nothing is stored after it
        self._pending: list[Message] = []
        self._arrived = asyncio.Event()
        self._closed = False
        self._task = asyncio.create_task(self._run())

    def add(self, message: Message) -> None:
        """Queue a progress message to be stored (dropped once storing failed)."""
        if self.failure is None:
            self._pending.append(message)
            self._arrived.set()

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            batch, self._pending = self._pending, []
            if batch and self.failure is None:
                try:
                    await self._write(batch)
                except Exception as exc:  # a gap in the job's record: it must not go on unrecorded
                    self.failure = exc
                    self._pending = []
                    self._on_failure(exc)
            if self._closed and not self._pending:
                return

    async def close(self) -> None:
        """Wait until everything added is stored and published, or storing failed (see `failure`)."""
        self._closed = True
        self._arrived.set()
        await self._task
