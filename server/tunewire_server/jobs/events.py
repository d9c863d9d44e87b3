"""Fan-out of job events to any number of subscribers.

Each live job has a Channel: the tail of its events in memory and a condition subscribers wait on.
An event is stored before it is published, so a subscriber can always fall back to the store for
anything the channel no longer holds; seq numbers make replay exact (no gaps, no duplicates).

With a shared store (several replicas) a job's events may be written by any replica, so a channel is
filled only from the store, in seq order: a Feed per job with followers reads what is new when it is
poked (a local publish, or a Notice from the store's LISTEN connection: `notify`) or every `poll_s`
seconds (the safety net), and closes the channel once it has read the job's terminal state change.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import AsyncIterator

import structlog

from tunewire_server.jobs.states import TERMINAL
from tunewire_server.store import Event, Store

log = structlog.get_logger("tunewire.events")

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


_TERMINAL_STATES = frozenset(state.value for state in TERMINAL)


def _ends(event: Event) -> bool:
    """Whether the event is a job's terminal state change (nothing follows it)."""
    return event.kind == "state_change" and event.payload.get("state") in _TERMINAL_STATES


class Feed:
    """Fills a job's channel from a shared store, in seq order, from `start` on (see the module docstring)."""

    def __init__(self, store: Store, job_id: str, start: int, poll_s: float) -> None:
        self.channel = Channel(job_id)
        self._store = store
        self._last = start
        self._poll_s = poll_s
        self._poked = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"tunewire-feed-{job_id}")

    def poke(self) -> None:
        """Something new may be stored: read it now."""
        self._poked.set()

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        job_id, ch = self.channel.job_id, self.channel
        try:
            poked = False
            while True:
                self._poked.clear()  # before the read: a poke during it reads again
                batch = await asyncio.to_thread(self._store.events_after, job_id, self._last, STORE_PAGE)
                for event in batch:
                    await ch.publish(event)
                if batch:
                    self._last = batch[-1].seq
                    if _ends(batch[-1]):
                        break
                    if len(batch) == STORE_PAGE:
                        continue
                elif not poked:  # the poll's turn (or the first read): is there anything left to follow?
                    job = await asyncio.to_thread(self._store.get_job, job_id)
                    if job is None or (job.terminal and job.last_seq <= self._last):
                        break
                poked = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._poked.wait(), self._poll_s)
                    poked = True
        except asyncio.CancelledError:
            raise
        except Exception:  # the store could not be read: followers read it themselves, then end
            log.exception("a job's event feed failed", job_id=job_id)
        await ch.close()


class EventHub:
    """Holds a channel per live job; replays from the store, then follows the channel. With a shared
    store (`store.shared`), channels are fed from the store (Feed), opened while a job has followers."""

    def __init__(self, store: Store, poll_s: float = 1.0) -> None:
        self._store = store
        self._channels: dict[str, Channel] = {}
        self.shared = bool(getattr(store, "shared", False))
        self._poll_s = poll_s
        self._feeds: dict[str, Feed] = {}

    def open(self, job_id: str) -> Channel | None:
        """The live job's channel (with a shared store channels open with followers: None)."""
        if self.shared:
            return None
        ch = self._channels.get(job_id)
        if ch is None:
            ch = self._channels[job_id] = Channel(job_id)
        return ch

    async def publish(self, event: Event) -> None:
        """An event this process stored: to its channel (with a shared store, its feed reads it)."""
        if self.shared:
            self.notify(event.job_id)
            return
        ch = self._channels.get(event.job_id)
        if ch is not None:
            await ch.publish(event)

    def notify(self, job_id: str) -> None:
        """The job's events may have grown (a Notice from the store): wake its feed, if it has one."""
        feed = self._feeds.get(job_id)
        if feed is not None:
            feed.poke()

    async def close(self, job_id: str) -> None:
        """The job is terminal: wake subscribers so they drain and finish."""
        if self.shared:
            self.notify(job_id)  # its feed reads the terminal event and closes the channel
            return
        ch = self._channels.pop(job_id, None)
        if ch is not None:
            await ch.close()

    async def aclose(self) -> None:
        """Stop every feed (the server stops)."""
        feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            await feed.stop()

    @property
    def open_streams(self) -> int:
        channels = [f.channel for f in self._feeds.values()] if self.shared else self._channels.values()
        return sum(ch.subscribers for ch in channels)

    async def follow_batches(self, job_id: str, after_seq: int) -> AsyncIterator[list[Event]]:
        """Every event with seq > after_seq, in order, until the job is terminal, as lists of everything
        pending when the subscriber asks next: a subscriber that keeps up gets one event at a time, one that
        is behind catches up in a few steps."""
        if self.shared:
            async for batch in self._follow_shared(job_id, after_seq):
                yield batch
            return
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
        async for batch in self._follow_channel(ch, last):
            yield batch

    async def _follow_shared(self, job_id: str, after_seq: int) -> AsyncIterator[list[Event]]:
        """follow_batches with a shared store: the stored events, then the job's feed's channel."""
        last = after_seq
        while True:
            batch = await asyncio.to_thread(self._store.events_after, job_id, last, STORE_PAGE)
            if batch:
                yield batch
                last = batch[-1].seq
                if _ends(batch[-1]):
                    return
            if len(batch) < STORE_PAGE:
                break
        feed = self._feeds.get(job_id)
        if feed is None or feed.channel.closed:
            feed = self._feeds[job_id] = Feed(self._store, job_id, last, self._poll_s)
        try:
            async for batch in self._follow_channel(feed.channel, last):
                yield batch
        finally:
            if feed.channel.subscribers == 0 and self._feeds.get(job_id) is feed:
                del self._feeds[job_id]
                await feed.stop()

    async def _follow_channel(self, ch: Channel, last: int) -> AsyncIterator[list[Event]]:
        """The channel's events after `last` (from the store where it no longer holds them) until it closes."""
        job_id = ch.job_id
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
