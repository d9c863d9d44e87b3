"""The ASGI app of the OpenAI-compatible face and the uvicorn server that runs it in the control plane's
event loop, on its own port, with the gRPC server's bearer tokens and TLS files."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass

import structlog
import uvicorn
from fastapi import FastAPI

from tunewire_server.config import Settings
from tunewire_server.datasets.catalog import Catalog
from tunewire_server.datasets.uploads import Uploads
from tunewire_server.jobs.manager import JobManager
from tunewire_server.models.service import ModelService
from tunewire_server.openai_api import chat, errors, files, fine_tuning, models
from tunewire_server.openai_api.auth import BearerAuth

log = structlog.get_logger("tunewire.openai")
STARTUP_TIMEOUT_S = 10.0


@dataclass
class Face:
    """The domain objects the routes work on (the same ones the gRPC servicer holds)."""

    settings: Settings
    manager: JobManager
    uploads: Uploads
    catalog: Catalog
    models: ModelService


def build_app(face: Face) -> FastAPI:
    """The FastAPI app: every route under /v1, OpenAI's error shape, bearer tokens when the server has any."""
    app = FastAPI(title="tunewire (OpenAI-compatible)", docs_url=None, redoc_url=None, openapi_url=None,
                  default_response_class=errors.FastJSONResponse)
    app.state.face = face
    for module in (files, fine_tuning, chat, models):
        app.include_router(module.router)
    errors.install(app)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok" if face.manager.serving() else "not_serving"}

    tokens = face.settings.accepted_tokens()
    if tokens:
        app.add_middleware(BearerAuth, tokens=tokens)
    return app


class _Server(uvicorn.Server):
    """uvicorn inside the control plane: the process's signals stay the control plane's own."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class HttpServer:
    """uvicorn serving the app on settings.http_port (0 picks a free one), in the running event loop."""

    def __init__(self, settings: Settings, face: Face) -> None:
        self.settings = settings
        self.app = build_app(face)
        self.port: int = 0
        self._server: _Server | None = None
        self._task: asyncio.Task | None = None

    def _config(self) -> uvicorn.Config:
        s = self.settings
        kwargs: dict = {}
        if s.tls_cert_file:
            kwargs = {"ssl_certfile": str(s.tls_cert_file), "ssl_keyfile": str(s.tls_key_file)}
            if s.tls_client_ca_file:  # mutual TLS, as on the gRPC port
                kwargs |= {"ssl_ca_certs": str(s.tls_client_ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        return uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off", server_header=False,
                              timeout_graceful_shutdown=5, **kwargs)

    async def start(self) -> int:
        """Bind and serve; the bound port (RuntimeError naming the address when it cannot bind)."""
        s = self.settings
        family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: a response's headers and body go out as two writes, and with
        # Nagle's algorithm the body waited for the client's delayed ACK (about 40 ms a request).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((s.host, s.http_port))
        except OSError as exc:
            sock.close()
            raise RuntimeError(f"cannot bind the HTTP port {s.host}:{s.http_port} ({exc.strerror})") from None
        self.port = sock.getsockname()[1]
        self._server = _Server(self._config())
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT_S
        while not self._server.started:  # the socket is the server's now: it closes it when it stops
            if self._task.done():
                self._task.result()  # its error
                raise RuntimeError("the HTTP server stopped while starting")
            if loop.time() > deadline:
                await self.stop()
                raise RuntimeError("the HTTP server did not start")
            await asyncio.sleep(0.01)
        log.info("serving OpenAI-compatible HTTP", address=f"{s.host}:{self.port}", tls=bool(s.tls_cert_file))
        return self.port

    async def stop(self) -> None:
        """Stop taking connections, let requests in progress end (a few seconds at most), then return."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 10)
        except (TimeoutError, asyncio.CancelledError):
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self._server = self._task = None
