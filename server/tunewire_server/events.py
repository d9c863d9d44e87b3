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


class Channel:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self._events: list[Event] = []
        self._seqs: list[int] = []
        self._cond = asyncio.Condition()
        self.closed = False
        self.subscribers = 0

    @property
    def last_seq(self) -> int:
        return self._seqs[-1] if self._seqs else 0

    async def publish(self, event: Event) -> None:
        async with self._cond:
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
            self._cond.notify_all()

    async def close(self) -> None:
        async with self._cond:
            self.closed = True
            self._cond.notify_all()

    def after(self, seq: int) -> list[Event] | None:
        """Events with seq > `seq`; None if the channel no longer holds all of them."""
        if self._seqs and seq + 1 < self._seqs[0]:
            return None
        return self._events[bisect.bisect_right(self._seqs, seq):]

    async def wait_beyond(self, seq: int) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.closed or self.last_seq > seq)


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

    async def follow(self, job_id: str, after_seq: int) -> AsyncIterator[Event]:
        """Every event with seq > after_seq, in order, until the job is terminal."""
        ch = self._channels.get(job_id)  # taken before reading the store: nothing falls between
        last = after_seq
        while True:  # stored events first
            batch = await asyncio.to_thread(self._store.events_after, job_id, last, 1000) \
                if ch is None else self._store.events_after(job_id, last, 1000)
            for event in batch:
                yield event
                last = event.seq
            if len(batch) < 1000:
                break
        if ch is None:
            return  # not live: the store held everything
        ch.subscribers += 1
        try:
            while True:
                events = ch.after(last)
                if events is None:  # fell behind the channel's memory
                    events = self._store.events_after(job_id, last, 1000)
                for event in events:
                    yield event
                    last = event.seq
                if ch.closed and last >= ch.last_seq:
                    return
                if not events:
                    await ch.wait_beyond(last)
        finally:
            ch.subscribers -= 1
