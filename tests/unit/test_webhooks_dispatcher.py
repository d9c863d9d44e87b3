"""webhooks/dispatcher.py on a real SQLite store and a real local receiver: a delivery still failing when
its retry window closes is marked failed; one whose endpoint was removed from the settings is dropped; a
delivery is sent (and verified) as soon as its event is stored."""

from __future__ import annotations

import asyncio

from tests.support.webhooks import Receiver, new_secret
from tunewire_server.config import Settings
from tunewire_server.jobs.states import JobState
from tunewire_server.store import SQLiteStore
from tunewire_server.webhooks.dispatcher import dispatcher_for
from tunewire_server.webhooks.payloads import WebhookOutbox


async def _until(predicate, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def _settings(tmp_path, url: str, secret: str, **kw) -> Settings:
    return Settings(data_dir=tmp_path, webhook_urls=url, webhook_secret=secret, webhook_poll_s=0.05,
                    webhook_retry_base_s=0.05, webhook_retry_max_s=0.1, **kw)


def _cancel_job(store, job_id="job-1"):
    store.create_job(job_id, "{}", None, ("state_change", {"state": "QUEUED"}))
    store.append_event(job_id, "state_change", {"state": "CANCELLED"}, {"state": JobState.CANCELLED})


def test_an_event_is_delivered_signed_and_marked_delivered(tmp_path):
    secret = new_secret()
    receiver = Receiver(secret)
    store = SQLiteStore(tmp_path / "db.sqlite")

    async def run():
        dispatcher = dispatcher_for(_settings(tmp_path, receiver.url, secret), store)
        await dispatcher.start()
        await store.write(_cancel_job, store)
        await _until(lambda: receiver.of_type("fine_tuning.job.cancelled"))
        await _until(lambda: store.list_deliveries()[0].state == "delivered")
        await dispatcher.stop()

    try:
        asyncio.run(run())
        assert [p["data"]["id"] for p in receiver.accepted()] == ["job-1"]
    finally:
        receiver.close()
        store.close()


def test_a_delivery_failing_past_its_window_is_marked_failed(tmp_path):
    secret = new_secret()
    receiver = Receiver(secret, status=500)
    store = SQLiteStore(tmp_path / "db.sqlite")

    async def run():
        dispatcher = dispatcher_for(_settings(tmp_path, receiver.url, secret, webhook_retry_window_s=0.5), store)
        await dispatcher.start()
        await store.write(_cancel_job, store)
        await _until(lambda: store.list_deliveries()[0].state == "failed")
        await dispatcher.stop()

    try:
        asyncio.run(run())
        (delivery,) = store.list_deliveries()
        assert delivery.last_error == "HTTP 500" and delivery.attempts == len(receiver.requests) >= 2
        assert len({r.webhook_id for r in receiver.requests}) == 1
    finally:
        receiver.close()
        store.close()


def test_a_delivery_to_an_endpoint_no_longer_configured_is_dropped(tmp_path):
    secret = new_secret()
    receiver = Receiver(secret)
    store = SQLiteStore(tmp_path / "db.sqlite")
    store.set_outbox(WebhookOutbox(["http://127.0.0.1:9/removed"]))  # what an earlier configuration enqueued
    _cancel_job(store)

    async def run():
        dispatcher = dispatcher_for(_settings(tmp_path, receiver.url, secret), store)
        await dispatcher.start()
        await _until(lambda: store.list_deliveries()[0].state == "failed")
        await dispatcher.stop()

    try:
        asyncio.run(run())
        assert "no longer configured" in store.list_deliveries()[0].last_error and receiver.requests == []
    finally:
        receiver.close()
        store.close()
