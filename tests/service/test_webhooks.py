"""Signed webhooks through a real server on 127.0.0.1 (both stores): a local receiver verifies every
delivery with the `standardwebhooks` package; one that is down for a while, or while the server restarts,
still gets every event once it is back, under the same webhook-id on every attempt."""

from __future__ import annotations

import tunewire
from tests import tiny
from tests.support.ports import free_port
from tests.support.specs import tiny_classification
from tests.support.waiting import wait_for
from tests.support.webhooks import Receiver, new_secret
from tunewire import JobState

FAST_RETRIES = {"warm_worker": False, "webhook_retry_base_s": 0.2, "webhook_retry_max_s": 0.5, "webhook_poll_s": 0.1,
                "webhook_timeout_s": 5.0}


def _start(server_factory, receiver_url: str, secret: str, data_dir=None, **overrides):
    server = server_factory(data_dir, webhook_urls=receiver_url, webhook_secret=secret,
                            **{**FAST_RETRIES, **overrides})
    tiny.write_jsonl(server.settings.dataset_root / "train.jsonl", tiny.sentiment_rows(16))
    return server


def test_succeeded_cancelled_and_checkpoint_events_arrive_signed(server_factory):
    secret = new_secret()
    receiver = Receiver(secret)
    try:
        server = _start(server_factory, receiver.url, secret)
        with tunewire.Client(server.address, timeout=30) as client:
            done = client.submit(tiny_classification(max_steps=2, save_strategy="steps", save_steps=1))
            queued = client.submit(tiny_classification(max_steps=2, save_strategy="no"))
            client.cancel(queued.id)
            assert client.wait(done.id).state == JobState.SUCCEEDED
            assert client.wait(queued.id, raise_on_failure=False).state == JobState.CANCELLED
        wait_for(lambda: receiver.of_type("fine_tuning.job.succeeded") and receiver.of_type("fine_tuning.job.cancelled"),
                 timeout=30)
        succeeded = receiver.of_type("fine_tuning.job.succeeded")
        assert [p["data"]["id"] for p in succeeded] == [done.id]
        assert succeeded[0]["object"] == "event" and succeeded[0]["id"].startswith("evt_")
        assert isinstance(succeeded[0]["created_at"], int)
        assert [p["data"]["id"] for p in receiver.of_type("fine_tuning.job.cancelled")] == [queued.id]
        checkpoints = receiver.of_type("tunewire.checkpoint.saved")
        assert {p["data"]["id"] for p in checkpoints} == {done.id} and len(checkpoints) >= 1
        assert all(r.verified for r in receiver.requests)  # every request carried a valid signature
        wait_for(lambda: all(d.state == "delivered" for d in server.server.store.list_deliveries()), timeout=10)
        assert len(server.server.store.list_deliveries()) == len(receiver.accepted())
    finally:
        receiver.close()


def test_a_receiver_that_fails_for_a_while_gets_every_delivery_once_back(server_factory):
    secret = new_secret()
    receiver = Receiver(secret, status=500)
    try:
        server = _start(server_factory, receiver.url, secret)
        with tunewire.Client(server.address, timeout=30) as client:
            job = client.submit(tiny_classification(max_steps=2, save_strategy="no"))
            client.wait(job.id)
        wait_for(lambda: len(receiver.requests) >= 3, timeout=30)  # it was tried, and retried
        assert not receiver.accepted()
        receiver.status = 200
        wait_for(lambda: receiver.of_type("fine_tuning.job.succeeded"), timeout=30)
        ids = {r.webhook_id for r in receiver.requests}
        assert len(ids) == 1  # the same webhook-id on every attempt: the receiver can de-duplicate
        (delivery,) = wait_for(lambda: [d for d in server.server.store.list_deliveries(job.id)
                                        if d.state == "delivered"], timeout=10)
        assert delivery.event_id in ids and delivery.attempts >= 3
    finally:
        receiver.close()


def test_deliveries_pending_at_a_stop_are_delivered_after_a_restart(server_factory, tmp_path):
    secret = new_secret()
    port = free_port()  # nobody listens there yet: every attempt is refused
    url = f"http://127.0.0.1:{port}/hooks"
    data_dir = tmp_path / "data"
    first = _start(server_factory, url, secret, data_dir)
    with tunewire.Client(first.address, timeout=30) as client:
        job = client.submit(tiny_classification(max_steps=2, save_strategy="no"))
        client.wait(job.id)
    wait_for(lambda: any(d.attempts >= 2 and "Connection" in d.last_error
                         for d in first.server.store.list_deliveries(job.id)), timeout=30)
    first.stop()
    receiver = Receiver(secret, port=port)
    try:
        second = _start(server_factory, url, secret, data_dir)
        wait_for(lambda: receiver.of_type("fine_tuning.job.succeeded"), timeout=30)
        assert [p["data"]["id"] for p in receiver.of_type("fine_tuning.job.succeeded")] == [job.id]
        wait_for(lambda: all(d.state == "delivered" for d in second.server.store.list_deliveries(job.id)), timeout=10)
    finally:
        receiver.close()
