"""Bearer tokens for the HTTP face: the tokens the gRPC server accepts (Settings.accepted_tokens), sent
as `Authorization: Bearer <token>` (what the openai client sends as its api_key). Compared in constant
time against every token, as the gRPC interceptor does. /health is open (probes carry no token)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from tunewire_server.openai_api.errors import Unauthenticated, error_response

OPEN_PATHS = frozenset({"/health"})
MESSAGE = "missing or invalid bearer token (send 'Authorization: Bearer <token>', the openai client's api_key)"


def token_of(header: str) -> str:
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


class BearerAuth:
    """ASGI middleware: a request without an accepted token gets OpenAI's 401 before any route runs."""

    def __init__(self, app: ASGIApp, tokens: Iterable[str]) -> None:
        self.app = app
        self._tokens = [t.encode() for t in tokens]

    def accepted(self, token: str) -> bool:
        candidate = token.encode()
        return bool(token) and any([hmac.compare_digest(candidate, t) for t in self._tokens])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"authorization"), "")
        if self.accepted(token_of(header)):
            await self.app(scope, receive, send)
            return
        await error_response(Unauthenticated(MESSAGE))(scope, receive, send)
