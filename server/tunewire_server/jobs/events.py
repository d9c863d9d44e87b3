"""Fan-out of job events to any number of subscribers.

Each live job has a Channel: the tail of its events in memory and a condition subscribers wait on.
An event is stored before it is published, so a subscriber can always fall back to the store for
anything the channel no longer holds; seq numbers make replay exact (no gaps, no duplicates).
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator

from tunewire_server.store import Event, Store

CHANNEL_MEMORY = 4096  # events kept in memory per live job
STORE_PAGE = 1000  # events read from the store at a time


class Channel:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self._events: list[Event] = []
        self._seqs: list[int] = []
        self._changed = asyncio.Event()  # set and cleared at once on each change: wakes every waiter
        self.closed = False
        self.subscribers = 0

    @property
    def last_seq(self) -> int:
        return self._seqs[-1] if self._seqs else 0

    async def publish(self, event: Event) -> None:
        if self._seqs and event.seq <= self._seqs[-1]:  # out of order: keep the list sorted
            i = bisect.bisect_left(self._seqs, event.seq)
            if i < len(self._seqs) and self._seqs[i] == event.seq:
                return
            self._events.insert(i, event)
            self._seqs.insert(i, event.seq)
        else:
            self._events.append(event)
            self._seqs.append(event.seq)
        if len(self._events) > CHANNEL_MEMORY:
            drop = len(self._events) - CHANNEL_MEMORY
            del self._events[:drop], self._seqs[:drop]
        self._wake()

    async def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed.clear()  # the waiters already woken stay woken; later ones wait for the next change

    def after(self, seq: int) -> list[Event] | None:
        """Events with seq > `seq`; None if the channel no longer holds all of them."""
        if self._seqs and seq + 1 < self._seqs[0]:
            return None
        return self._events[bisect.bisect_right(self._seqs, seq):]

    async def wait_beyond(self, seq: int) -> None:
        while not (self.closed or self.last_seq > seq):
            await self._changed.wait()


class EventHub:
    """Holds a channel per live job; replays from the store, then follows the channel."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._channels: dict[str, Channel] = {}

    def open(self, job_id: str) -> Channel:
        ch = self._channels.get(job_id)
        if ch is None:
            ch = self._channels[job_id] = Channel(job_id)
        return ch

    async def publish(self, event: Event) -> None:
        ch = self._channels.get(event.job_id)
        if ch is not None:
            await ch.publish(event)

    async def close(self, job_id: str) -> None:
        """The job is terminal: wake subscribers so they drain and finish."""
        ch = self._channels.pop(job_id, None)
        if ch is not None:
            await ch.close()

    @property
    def open_streams(self) -> int:
        return sum(ch.subscribers for ch in self._channels.values())

    async def follow_batches(self, job_id: str, after_seq: int) -> AsyncIterator[list[Event]]:
        """Every event with seq > after_seq, in order, until the job is terminal, as lists of everything
        pending when the subscriber asks next: a subscriber that keeps up gets one event at a time, one that
        is behind catches up in a few steps."""
        ch = self._channels.get(job_id)  # taken before reading the store: nothing falls between
        last = after_seq
        while True:  # stored events first
            batch = await asyncio.to_thread(self._store.events_after, job_id, last, STORE_PAGE) \
                if ch is None else self._store.events_after(job_id, last, STORE_PAGE)
            if batch:
                yield batch
                last = batch[-1].seq
            if len(batch) < STORE_PAGE:
                break
        if ch is None:
            return  # not live: the store held everything
        ch.subscribers += 1
        try:
            while True:
                batch = ch.after(last)
                if batch is None:  # fell behind the channel's memory
                    batch = self._store.events_after(job_id, last, STORE_PAGE)
                if batch:
                    yield batch
                    last = batch[-1].seq
                if ch.closed and last >= ch.last_seq:
                    return
                if not batch:
                    await ch.wait_beyond(last)
        finally:
            ch.subscribers -= 1
