"""webhooks/signing.py: Standard Webhooks headers that the `standardwebhooks` package's Webhook.verify accepts,
and refuses for another secret, a changed body or an old timestamp."""

from __future__ import annotations

import json
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.support.webhooks import new_secret
from tunewire_server.store.base import Event
from tunewire_server.webhooks.payloads import WebhookOutbox
from tunewire_server.webhooks.signing import Signer


def _body() -> str:
    event = Event("job-1", 5, 1_700_000_000.0, "state_change", {"state": "SUCCEEDED"})
    return WebhookOutbox(["http://a/"]).deliveries(event)[0].body


def test_a_signed_delivery_verifies_with_the_standard_webhooks_package():
    secret = new_secret()
    body = _body()
    headers = Signer(secret).headers("evt_1", body)
    assert headers["webhook-id"] == "evt_1" and headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):  # another secret
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):  # a changed body
        Webhook(secret).verify(body.replace("job-1", "job-2"), headers)
    with pytest.raises(WebhookVerificationError):  # an old timestamp (a replay) is refused by the receiver
        Webhook(secret).verify(body, Signer(secret).headers("evt_1", body, at=time.time() - 3600))


def test_a_bad_secret_is_refused_before_signing():
    with pytest.raises(ValueError, match="webhook_secret"):
        Signer("whsec_tooshort")


def test_the_openai_package_accepts_the_signature_too():
    openai = pytest.importorskip("openai")
    secret = new_secret()
    body = _body()
    client = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    event = client.webhooks.unwrap(body, Signer(secret).headers("evt_1", body), secret=secret)
    assert event.type == "fine_tuning.job.succeeded" and event.data.id == "job-1"
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.verify_signature(body, Signer(new_secret()).headers("evt_1", body), secret=secret)
