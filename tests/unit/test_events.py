"""Fan-out: replay from the store, then live events, no gaps or duplicates, for every subscriber."""

import asyncio

from tunewire_server.jobs import events
from tunewire_server.jobs.events import EventHub
from tunewire_server.store import SQLiteStore as Store


async def _follow(hub, job_id, after=0):
    async for batch in hub.follow_batches(job_id, after):
        for event in batch:
            yield event


async def _collect(hub, job_id, after=0):
    return [e.seq async for e in _follow(hub, job_id, after)]


def _setup(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    store.create_job("j", "{}", None, ("state_change", {"state": "QUEUED"}))
    hub = EventHub(store)
    hub.open("j")
    return store, hub


async def _publish(store, hub, n, delay=0.0):
    for i in range(n):
        await hub.publish(store.append_event("j", "train_log", {"step": i}))
        await asyncio.sleep(delay)
    await hub.close("j")


async def test_subscribers_see_the_same_events_in_order(tmp_path):
    store, hub = _setup(tmp_path)
    await hub.publish(store.append_event("j", "train_log", {"step": -1}))  # before anyone subscribed
    subscribers = [asyncio.create_task(_collect(hub, "j")) for _ in range(20)]
    late = asyncio.create_task(_collect(hub, "j", after=5))
    await asyncio.sleep(0.01)
    await _publish(store, hub, 30, delay=0.001)
    results = await asyncio.gather(*subscribers)
    assert all(r == list(range(1, 33)) for r in results)
    assert await late == list(range(6, 33))


async def test_a_finished_job_replays_from_the_store(tmp_path):
    store, hub = _setup(tmp_path)
    await _publish(store, hub, 5)
    assert await _collect(hub, "j") == [1, 2, 3, 4, 5, 6]
    assert await _collect(hub, "j", after=4) == [5, 6]


async def test_a_slow_subscriber_falls_back_to_the_store(tmp_path, monkeypatch):
    monkeypatch.setattr(events, "CHANNEL_MEMORY", 8)
    store, hub = _setup(tmp_path)
    seen = []
    ready = asyncio.Event()

    async def slow():
        async for event in _follow(hub, "j", 0):
            seen.append(event.seq)
            if event.seq == 1:
                ready.set()
                await asyncio.sleep(0.2)  # meanwhile 40 events pass; the channel keeps only 8

    task = asyncio.create_task(slow())
    await ready.wait()
    await _publish(store, hub, 40)
    await task
    assert seen == list(range(1, 42))


async def test_stream_counts_open_subscribers(tmp_path):
    store, hub = _setup(tmp_path)
    task = asyncio.create_task(_collect(hub, "j"))
    await asyncio.sleep(0.01)
    assert hub.open_streams == 1
    await _publish(store, hub, 1)
    await task
    assert hub.open_streams == 0
