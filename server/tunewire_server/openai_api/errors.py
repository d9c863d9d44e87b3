"""The one place domain errors (errors.py) become HTTP answers in OpenAI's error shape:
{"error": {"message", "type", "param", "code"}} with the status the openai client turns into its exception
classes (400 BadRequestError, 401 AuthenticationError, 404 NotFoundError, 409 ConflictError, 429
RateLimitError, 5xx InternalServerError)."""

from __future__ import annotations

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from tunewire_server import errors

log = structlog.get_logger("tunewire.openai")

# (HTTP status, OpenAI error type, code) per domain error; the first matching class wins.
STATUSES: list[tuple[type[errors.TunewireError], int, str, str]] = [
    (errors.InvalidSpec, 400, "invalid_request_error", "invalid_value"),
    (errors.NotFound, 404, "invalid_request_error", "not_found"),
    (errors.FailedPrecondition, 409, "invalid_request_error", "failed_precondition"),
    (errors.AlreadyExists, 409, "invalid_request_error", "already_exists"),
    (errors.ResourceExhausted, 429, "rate_limit_error", "resource_exhausted"),
    (errors.Unavailable, 503, "server_error", "unavailable"),
]
MAX_MESSAGE_CHARS = 2000


class NotImplementedYet(errors.TunewireError):
    """A route whose domain method this server does not have (HTTP 501)."""


class Unauthenticated(errors.TunewireError):
    """A missing or wrong bearer token (HTTP 401)."""


class FastJSONResponse(JSONResponse):
    """JSON written by orjson: the hot routes return one of these, so FastAPI's generic encoding of the
    returned object (jsonable_encoder) is skipped."""

    def render(self, content) -> bytes:
        return orjson.dumps(content)


def body(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    """OpenAI's error object."""
    return {"error": {"message": message[:MAX_MESSAGE_CHARS], "type": type_, "param": param, "code": code}}


def error_response(exc: BaseException) -> JSONResponse:
    """The HTTP answer for `exc`: a domain error keeps its message; anything else is a 500 that leaks nothing."""
    if isinstance(exc, Unauthenticated):
        return JSONResponse(body(exc.message, "authentication_error", "invalid_api_key"), status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, NotImplementedYet):
        return JSONResponse(body(exc.message, "server_error", "not_implemented"), status_code=501)
    if isinstance(exc, errors.TunewireError):
        for cls, status, type_, code in STATUSES:
            if isinstance(exc, cls):
                param = exc.violations[0].field if isinstance(exc, errors.InvalidSpec) else None
                return JSONResponse(body(exc.message, type_, code, param), status_code=status)
        return JSONResponse(body(exc.message, "server_error", "internal_error"), status_code=500)
    log.error("unhandled error", exc_info=exc)
    return JSONResponse(body("internal error; the server log has the details", "server_error", "internal_error"),
                        status_code=500)


def install(app: FastAPI) -> None:
    """Every error the app can raise answers in OpenAI's shape: domain errors, FastAPI's request validation
    (400, naming the field), unknown routes and methods, and anything unexpected."""

    async def domain(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        param = ".".join(loc) or None
        message = f"{param}: {first.get('msg', 'invalid')}" if param else str(first.get("msg", "invalid request"))
        return JSONResponse(body(message, "invalid_request_error", "invalid_value", param), status_code=400)

    async def http(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return JSONResponse(body(message, "invalid_request_error", code), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    app.add_exception_handler(errors.TunewireError, domain)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(Exception, domain)
