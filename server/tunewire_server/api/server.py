"""Build and run the grpc.aio server: the tuning service, health and reflection."""

from __future__ import annotations

import asyncio

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tunewire.v1 import tuning_service_pb2
from tunewire_server.api.auth import BearerTokenInterceptor
from tunewire_server.api.servicer import TuningServicer, tuning_handlers
from tunewire_server.config import Settings
from tunewire_server.manager import JobManager
from tunewire_server.observability import Metrics
from tunewire_server.store import Store

log = structlog.get_logger("tunewire.server")
SERVICE_NAME = tuning_service_pb2.DESCRIPTOR.services_by_name["TuningService"].full_name


class TunewireServer:
    """One control plane: store, job manager and gRPC server. `start()` returns once SERVING."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Store | None = None
        self.manager: JobManager | None = None
        self.health = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        self.port: int = 0
        self.metrics: Metrics | None = None
        self.metrics_port: int | None = None
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(s.db_path)
        self.metrics = Metrics()
        self.metrics.watch_store(lambda state: self.store.count_in_states([state]))
        self.manager = JobManager(s, self.store, self.metrics)
        await self.manager.start()
        options = [
            ("grpc.max_receive_message_length", s.max_message_bytes),
            ("grpc.max_send_message_length", s.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        tokens = s.accepted_tokens()
        interceptors = [BearerTokenInterceptor(tokens)] if tokens else []
        server = grpc.aio.server(options=options, interceptors=interceptors)
        server.add_generic_rpc_handlers(
            (tuning_handlers(TuningServicer(self.manager, s.max_streams, self.metrics)),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
        address = f"{s.host}:{s.port}"
        if s.tls_cert_file:
            ca = s.tls_client_ca_file.read_bytes() if s.tls_client_ca_file else None
            credentials = grpc.ssl_server_credentials(
                [(s.tls_key_file.read_bytes(), s.tls_cert_file.read_bytes())],
                root_certificates=ca, require_client_auth=ca is not None)
            self.port = server.add_secure_port(address, credentials)
        else:
            self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"cannot bind {s.host}:{s.port}")
        await server.start()
        self._server = server
        if s.metrics_port >= 0:
            self.metrics_port = self.metrics.serve(s.host, s.metrics_port)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", address=f"{s.host}:{self.port}", metrics_port=self.metrics_port,
                 data_dir=str(s.data_dir), auth=bool(tokens),
                 tls="mutual" if s.tls_client_ca_file else bool(s.tls_cert_file))
        return self.port

    async def _set_health(self, status) -> None:
        for name in ("", SERVICE_NAME):
            result = self.health.set(name, status)
            if asyncio.iscoroutine(result):
                await result

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING first, so load balancers drain; then stop the job and the server."""
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.manager is not None:
            await self.manager.stop()
        if self._server is not None:
            await self._server.stop(grace if grace is not None else 5)
        if self.metrics is not None:
            self.metrics.close()
        if self.store is not None:
            self.store.close()
        log.info("stopped")

    async def wait(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()
