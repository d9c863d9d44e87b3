"""Build and run the grpc.aio server: the tuning service, health and reflection."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tunewire.v1 import tuning_service_pb2
from tunewire_server.api.auth import BearerTokenInterceptor
from tunewire_server.api.servicer import TuningServicer, tuning_handlers
from tunewire_server.api.tls import check_pem, server_credentials
from tunewire_server.config import Settings
from tunewire_server.datasets.catalog import Catalog
from tunewire_server.datasets.uploads import Uploads
from tunewire_server.jobs.manager import JobManager
from tunewire_server.models.service import ModelService
from tunewire_server.models.sweeper import RetentionSweeper
from tunewire_server.observability import Metrics
from tunewire_server.shared_store import check_at_start
from tunewire_server.store import Store
from tunewire_server.store.factory import open_store
from tunewire_server.webhooks.dispatcher import WebhookDispatcher, dispatcher_for

log = structlog.get_logger("tunewire.server")
SERVICE_NAME = tuning_service_pb2.DESCRIPTOR.services_by_name["TuningService"].full_name
HEALTH_POLL_S = 1.0  # how often health follows JobManager.serving()
KEEPALIVE_TIMEOUT_MS = 20_000  # grpc's default: an unanswered ping closes the connection after this


def server_options(s: Settings) -> list[tuple[str, int]]:
    """grpc core channel arguments. The ping policy agrees with the SDK's keepalive (the same keepalive_s):
    grpc's default policy takes a ping less than 5 minutes after the previous one (while the server sends
    nothing, as on a quiet StreamMetrics) as a strike, and after two strikes closes the connection with
    GOAWAY too_many_pings, which fails every call on it. Pings half as far apart as keepalive_s are still
    accepted, so timer jitter never counts as a strike; a client pinging faster than that still does."""
    keepalive_ms = int(s.keepalive_s * 1000)
    return [
        ("grpc.max_receive_message_length", s.max_message_bytes),
        ("grpc.max_send_message_length", s.max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", keepalive_ms // 2),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.keepalive_permit_without_calls", 1),  # a client may keep an idle connection alive
        # the server pings too: a client that vanished (no FIN) has its streams closed, its slots freed
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ]


class TunewireServer:
    """One control plane: store, job manager, models (downloads, deletion, retention) and gRPC server.
    `start()` returns once SERVING."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Store | None = None
        self.manager: JobManager | None = None
        self.models: ModelService | None = None
        self.retention: RetentionSweeper | None = None
        self.webhooks: WebhookDispatcher | None = None
        self.health = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        self.port: int = 0
        self.metrics: Metrics | None = None
        self.metrics_port: int | None = None
        self.http = None  # the OpenAI-compatible HTTP server (openai_api/), when http_port is not -1
        self.http_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._health_task: asyncio.Task | None = None
        self._serving: bool | None = None

    async def start(self) -> int:
        s = self.settings
        if s.tls_cert_file:  # before anything starts: a bad key or certificate is named, not "Failed to bind"
            check_pem(s.tls_cert_file, s.tls_key_file, s.tls_client_ca_file)
        s.data_dir.mkdir(parents=True, exist_ok=True)
        # before anything starts: a wrong bucket, endpoint or credentials stop the server, naming the setting
        artifacts = await asyncio.to_thread(check_at_start, s)
        self.store = open_store(s)  # SQLite, or PostgreSQL shared by replicas (the `store` setting)
        self.webhooks = dispatcher_for(s, self.store)  # before any job event: each enqueues its deliveries
        self.metrics = Metrics()
        self.metrics.watch_store(lambda state: self.store.count_in_states([state]))
        self.manager = JobManager(s, self.store, self.metrics)
        await self.manager.start()
        if self.webhooks is not None:
            await self.webhooks.start()
        self.models = ModelService(s.jobs_dir, s.data_dir, self.store, s.worker_cwd, torch_threads=s.torch_threads,
                                   merge_timeout_s=s.merge_timeout_s, evict=self.manager.inference.evict,
                                   artifacts=artifacts)
        await asyncio.to_thread(self.models.start)
        self.retention = RetentionSweeper(self.models, self.store, keep_checkpoints=s.keep_checkpoints,
                                          artifact_ttl_s=s.artifact_ttl_s, interval_s=s.retention_interval_s)
        self.retention.start()
        self.manager.after_success(self.retention.job_succeeded)  # a succeeded job keeps keep_checkpoints
        options = server_options(s)
        tokens = s.accepted_tokens()
        interceptors = [BearerTokenInterceptor(tokens)] if tokens else []
        server = grpc.aio.server(options=options, interceptors=interceptors)
        uploads, catalog = Uploads(s, self.store), Catalog(s, self.store)
        servicer = TuningServicer(self.manager, s.max_streams, self.metrics, uploads=uploads,
                                  catalog=catalog, models=self.models)
        server.add_generic_rpc_handlers((tuning_handlers(servicer),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
        address = f"{s.host}:{s.port}"
        if s.tls_cert_file:
            self.port = server.add_secure_port(address, server_credentials(s))
        else:
            self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"cannot bind {s.host}:{s.port} (in use, or not an address of this machine)")
        # grpc's health servicer answers SERVING for "" from the start: NOT_SERVING until every face is up
        # (the HTTP face below included), so probes and load balancers wait for _follow_manager.
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        self._server = server
        if s.metrics_port >= 0:
            self.metrics_port = self.metrics.serve(s.host, s.metrics_port)
        if s.http_port >= 0:  # imported only when on: the control plane without it loads no ASGI stack
            from tunewire_server.openai_api.app import Face, HttpServer

            self.http = HttpServer(s, Face(s, self.manager, uploads, catalog, self.models))
            self.http_port = await self.http.start()
        await self._follow_manager()
        self._health_task = asyncio.create_task(self._watch_health())
        log.info("serving", address=f"{s.host}:{self.port}", metrics_port=self.metrics_port, http_port=self.http_port,
                 data_dir=str(s.data_dir), auth=bool(tokens),
                 tls="mutual" if s.tls_client_ca_file else bool(s.tls_cert_file))
        return self.port

    async def _follow_manager(self) -> None:
        """SERVING while the job manager can do its work (JobManager.serving(): the store can write, the
        scheduler runs), NOT_SERVING otherwise, for both "" and the tuning service."""
        probe = getattr(self.manager, "serving", None)
        try:
            serving = bool(probe()) if callable(probe) else True
        except Exception:
            if self._serving is not False:  # once per failure, not every second
                log.exception("the health probe failed")
            serving = False
        if serving != self._serving:
            if self._serving is not None:
                log.warning("health changed", serving=serving)
            self._serving = serving
            await self._set_health(health_pb2.HealthCheckResponse.SERVING if serving
                                   else health_pb2.HealthCheckResponse.NOT_SERVING)

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_POLL_S)
            try:
                await self._follow_manager()
            except Exception:  # the watch must outlive any one failure
                log.exception("could not update health")

    async def _set_health(self, status) -> None:
        for name in ("", SERVICE_NAME):
            result = self.health.set(name, status)
            if asyncio.iscoroutine(result):
                await result

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING first, so load balancers drain; then stop the job and the server."""
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.http is not None:  # before the manager: no request reaches a stopped job core
            await self.http.stop()
        if self.retention is not None:
            await self.retention.stop()
        if self.manager is not None:
            await self.manager.stop()
        if self._server is not None:
            await self._server.stop(grace if grace is not None else 5)
        if self.webhooks is not None:  # after the job core's last events: what it enqueued waits in the store
            await self.webhooks.stop()
        if self.models is not None:
            await self.models.close()  # a merge still running is stopped
        if self.metrics is not None:
            self.metrics.close()
        if self.store is not None:
            self.store.close()
        log.info("stopped")

    async def wait(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()
