"""Which job events become webhook events, and their payloads: shaped like OpenAI's webhook events,
`{"object": "event", "id": "evt_…", "type": "fine_tuning.job.succeeded", "created_at": <unix seconds>,
"data": {"id": <job id>, …}}`.

WebhookOutbox is the store's Outbox (store/base.py): inside the transaction that appends a job's events it
maps each to one delivery per configured endpoint, so an event is never stored without its deliveries.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence

from tunewire_server.jobs.states import JobState
from tunewire_server.store.base import Event, NewDelivery

JOB_SUCCEEDED = "fine_tuning.job.succeeded"
JOB_FAILED = "fine_tuning.job.failed"
JOB_CANCELLED = "fine_tuning.job.cancelled"
JOB_PAUSED = "fine_tuning.job.paused"
CHECKPOINT_SAVED = "tunewire.checkpoint.saved"  # tunewire's own: OpenAI has no checkpoint event

STATE_EVENTS: dict[str, str] = {
    JobState.SUCCEEDED.value: JOB_SUCCEEDED,
    JobState.FAILED.value: JOB_FAILED,
    JobState.CANCELLED.value: JOB_CANCELLED,
    JobState.PAUSED.value: JOB_PAUSED,
}
EVENT_TYPES = (*STATE_EVENTS.values(), CHECKPOINT_SAVED)


def event_id(job_id: str, seq: int) -> str:
    """The webhook event id of the job's event `seq`: derived from them, so enqueueing it twice is a no-op
    and every retry carries the same id (the receiver's de-duplication key, the webhook-id header)."""
    return "evt_" + hashlib.sha256(f"{job_id}\0{seq}".encode()).hexdigest()[:32]


def webhook_event(event: Event) -> dict | None:
    """The webhook event a stored job event announces, or None for the events that announce none."""
    data: dict = {"id": event.job_id}
    if event.kind == "state_change":
        event_type = STATE_EVENTS.get(str(event.payload.get("state")))
        if event_type is None:
            return None
        if event_type == JOB_FAILED and isinstance(event.payload.get("error"), dict):
            data["error"] = event.payload["error"]  # {code, message, field, kind}
    elif event.kind == "checkpoint_saved":
        event_type = CHECKPOINT_SAVED
        data.update(step=event.payload.get("step"), checkpoint=event.payload.get("name"))
    else:
        return None
    return {"object": "event", "id": event_id(event.job_id, event.seq), "type": event_type,
            "created_at": int(event.time), "data": data}


def encode(body: dict) -> str:
    """The JSON text sent (and signed) for a webhook event: compact, the same bytes on every attempt."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


class WebhookOutbox:
    """The store's Outbox: one delivery per endpoint for each event that announces a webhook event."""

    def __init__(self, urls: Sequence[str], on_enqueued: Callable[[], None] = lambda: None) -> None:
        self.urls = tuple(urls)
        self._on_enqueued = on_enqueued

    def deliveries(self, event: Event) -> list[NewDelivery]:
        body = webhook_event(event)
        if body is None:
            return []
        text = encode(body)
        return [NewDelivery(id="whd_" + hashlib.sha256(f"{body['id']}\0{url}".encode()).hexdigest()[:32],
                            event_id=body["id"], url=url, event_type=body["type"], job_id=event.job_id,
                            body=text, created_at=event.time)
                for url in self.urls]

    def enqueued(self) -> None:
        self._on_enqueued()
