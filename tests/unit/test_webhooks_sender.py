"""webhooks/sender.py against a real local HTTP server: a 2xx answer is a success, anything else (a 5xx,
a redirect, which is never followed, a refused connection, a timeout) a failed attempt that says why."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.ports import free_port
from tunewire_server.webhooks.sender import post


@pytest.fixture
def endpoint():
    got: list[tuple[str, dict, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if self.path == "/slow":
                time.sleep(2)
            status = {"/ok": 204, "/fail": 500, "/moved": 307}.get(self.path, 200)
            self.send_response(status)
            if status == 307:
                self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", got
    server.shutdown()
    server.server_close()


def test_a_2xx_answer_is_a_success_and_the_body_and_headers_arrive(endpoint):
    base, got = endpoint
    result = post(base + "/ok", '{"a":1}', {"webhook-id": "evt_1"}, 5)
    assert result.ok and result.status == 204
    path, headers, body = got[0]
    assert body == b'{"a":1}' and headers["webhook-id"] == "evt_1"
    assert headers["content-type"] == "application/json"  # (urllib sends header names capitalized)


def test_failures_say_why(endpoint):
    base, got = endpoint
    assert post(base + "/fail", "{}", {}, 5) == post(base + "/fail", "{}", {}, 5)
    assert post(base + "/fail", "{}", {}, 5).error == "HTTP 500"
    moved = post(base + "/moved", "{}", {}, 5)
    assert not moved.ok and moved.status == 307
    assert [p for p, _, _ in got].count("/elsewhere") == 0  # the redirect was not followed
    refused = post(f"http://127.0.0.1:{free_port()}/x", "{}", {}, 5)
    assert not refused.ok and refused.status is None and "Connection" in refused.error
    slow = post(base + "/slow", "{}", {}, 0.2)
    assert not slow.ok and "timed out" in slow.error.lower()
