"""A webhook receiver for tests: an http.server on 127.0.0.1 in a thread that verifies every delivery with
the `standardwebhooks` package (Webhook.verify), as a real endpoint would, and keeps what it got."""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError


def new_secret() -> str:
    """A fresh Standard Webhooks secret: whsec_ then base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass(frozen=True)
class Received:
    """One request the receiver answered: its webhook-id, whether it verified, the status it answered."""

    webhook_id: str
    verified: bool
    status: int
    payload: dict | None


class Receiver:
    """Answers `status` (200 = up; 500 = failing) to every POST; verifies each with `secret`. Start it on a
    port of its own, or on a given one (a receiver that was down comes back there)."""

    def __init__(self, secret: str, port: int = 0, status: int = 200) -> None:
        self.secret = secret
        self.status = status
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    payload = Webhook(receiver.secret).verify(body, dict(self.headers))
                    verified = True
                except WebhookVerificationError:
                    payload, verified = json.loads(body or b"null"), False
                status = receiver.status if verified else 400
                with receiver._lock:
                    receiver.requests.append(Received(self.headers.get("webhook-id", ""), verified, status, payload))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def accepted(self) -> list[dict]:
        """The payloads of the deliveries it verified and answered 2xx, one per webhook-id (de-duplicated)."""
        with self._lock:
            seen: dict[str, dict] = {}
            for r in self.requests:
                if r.verified and 200 <= r.status < 300 and r.webhook_id not in seen:
                    seen[r.webhook_id] = r.payload
            return list(seen.values())

    def of_type(self, event_type: str) -> list[dict]:
        return [p for p in self.accepted() if p["type"] == event_type]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
