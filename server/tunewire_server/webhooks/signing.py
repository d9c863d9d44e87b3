"""Standard Webhooks signatures (what OpenAI's webhooks use), made with the `standardwebhooks` package:
the headers webhook-id, webhook-timestamp and webhook-signature ("v1,<base64 HMAC-SHA256 of
id.timestamp.body>")."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from standardwebhooks import Webhook

from tunewire_server.webhooks.endpoints import secret_key


class Signer:
    """Signs deliveries with one whsec_ secret (checked first: ValueError naming the setting)."""

    def __init__(self, secret: str) -> None:
        self._webhook = Webhook(secret_key(secret))

    def headers(self, msg_id: str, body: str, at: float | None = None) -> dict[str, str]:
        """The signature headers of `body` sent as message `msg_id` at `at` (now by default; each attempt
        is signed anew, so a receiver's timestamp tolerance holds for retries too)."""
        seconds = int(time.time() if at is None else at)
        signature = self._webhook.sign(msg_id, datetime.fromtimestamp(seconds, tz=UTC), body)
        return {"webhook-id": msg_id, "webhook-timestamp": str(seconds), "webhook-signature": signature}
