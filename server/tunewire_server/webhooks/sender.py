"""One HTTP attempt of a webhook delivery, with the standard library's urllib (blocking: the dispatcher runs
it on a thread of its own). Redirects are not followed: a delivery goes to the configured URL or nowhere."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from dataclasses import dataclass

USER_AGENT = "tunewire-webhooks/1"
MAX_RESPONSE_BYTES = 64 * 1024  # read (and dropped) of an endpoint's answer: enough to finish the exchange


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        return None  # the 3xx answer stands: counted as a failed attempt


_OPENER = urllib.request.build_opener(_NoRedirects())


@dataclass(frozen=True)
class Attempt:
    """How an attempt went: `ok` for a 2xx answer; else `error` says why (status, refusal, timeout)."""

    ok: bool
    status: int | None = None
    error: str = ""


def post(url: str, body: str, headers: dict[str, str], timeout_s: float) -> Attempt:
    """POST the JSON `body` with `headers` to `url`, waiting at most timeout_s for each network step."""
    request = urllib.request.Request(url, data=body.encode(), method="POST", headers={
        "Content-Type": "application/json", "User-Agent": USER_AGENT, **headers})
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            response.read(MAX_RESPONSE_BYTES)
            status = response.status
    except urllib.error.HTTPError as exc:  # an answer outside 2xx (3xx included: not followed)
        exc.close()
        return Attempt(False, exc.code, f"HTTP {exc.code}")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Attempt(False, None, f"{type(reason).__name__}: {reason}"[:500])
    if 200 <= status < 300:
        return Attempt(True, status)
    return Attempt(False, status, f"HTTP {status}")
