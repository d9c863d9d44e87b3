"""webhooks/payloads.py: which job events become webhook events, their OpenAI-shaped payloads, and the
outbox's deliveries."""

from __future__ import annotations

import json

import pytest

from tunewire_server.store.base import Event
from tunewire_server.webhooks.payloads import WebhookOutbox, event_id, webhook_event


def _state(state: str, seq: int = 5, **extra) -> Event:
    return Event("job-1", seq, 1_700_000_000.75, "state_change", {"state": state, "message": "", **extra})


@pytest.mark.parametrize(("state", "event_type"), [
    ("SUCCEEDED", "fine_tuning.job.succeeded"), ("FAILED", "fine_tuning.job.failed"),
    ("CANCELLED", "fine_tuning.job.cancelled"), ("PAUSED", "fine_tuning.job.paused")])
def test_terminal_and_paused_states_become_openai_shaped_events(state, event_type):
    body = webhook_event(_state(state))
    assert body == {"object": "event", "id": event_id("job-1", 5), "type": event_type,
                    "created_at": 1_700_000_000, "data": {"id": "job-1"}}


def test_a_failure_carries_its_error_and_a_checkpoint_its_step():
    error = {"code": "NAN_LOSS", "message": "loss is NaN", "field": "", "kind": "user"}
    assert webhook_event(_state("FAILED", error=error))["data"] == {"id": "job-1", "error": error}
    body = webhook_event(Event("job-1", 9, 1.0, "checkpoint_saved", {"step": 4, "name": "checkpoint-4"}))
    assert body["type"] == "tunewire.checkpoint.saved"
    assert body["data"] == {"id": "job-1", "step": 4, "checkpoint": "checkpoint-4"}


@pytest.mark.parametrize("event", [
    _state("QUEUED"), _state("RUNNING"), _state("CANCELLING"), _state("PAUSING"),
    Event("job-1", 3, 1.0, "train_log", {"step": 1, "loss": 0.5}),
    Event("job-1", 4, 1.0, "eval_result", {"step": 1, "metrics": {}})])
def test_other_events_announce_nothing(event):
    assert webhook_event(event) is None
    assert WebhookOutbox(["http://a/"]).deliveries(event) == []


def test_event_ids_are_stable_per_job_event_and_distinct_across_them():
    assert event_id("job-1", 5) == event_id("job-1", 5)
    assert len({event_id("job-1", 5), event_id("job-1", 6), event_id("job-2", 5)}) == 3


def test_the_outbox_makes_one_delivery_per_endpoint_with_one_event_id():
    outbox = WebhookOutbox(["http://a.example/hook", "https://b.example/hook"])
    deliveries = outbox.deliveries(_state("SUCCEEDED"))
    assert [d.url for d in deliveries] == ["http://a.example/hook", "https://b.example/hook"]
    assert len({d.id for d in deliveries}) == 2 and len({d.event_id for d in deliveries}) == 1
    assert all(json.loads(d.body) == webhook_event(_state("SUCCEEDED")) for d in deliveries)
    assert deliveries == outbox.deliveries(_state("SUCCEEDED"))  # the same rows again: enqueued once
