"""gRPC health follows the job manager: NOT_SERVING while it cannot do its work, SERVING once it can."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import tunewire
from tests.support.waiting import wait_for

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_follows_job_manager_serving(server, monkeypatch):
    """JobManager.serving() is False while the store cannot write or the scheduler died; the behaviour
    under test is the wiring to grpc.health.v1, so the probe's answer is set here."""
    manager = server.server.manager
    with grpc.insecure_channel(server.address) as channel, tunewire.Client(server.address) as client:
        stub = health_pb2_grpc.HealthStub(channel)

        def statuses():
            return {stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
                    for name in ("", "tunewire.v1.TuningService")}

        assert statuses() == {SERVING} and client.health()
        monkeypatch.setattr(manager, "serving", lambda: False, raising=False)
        wait_for(lambda: statuses() == {NOT_SERVING}, timeout=10)
        assert not client.health()

        def broken():
            raise OSError("disk I/O error")

        monkeypatch.setattr(manager, "serving", lambda: True, raising=False)
        wait_for(lambda: statuses() == {SERVING}, timeout=10)
        monkeypatch.setattr(manager, "serving", broken, raising=False)  # a failing probe is not SERVING
        wait_for(lambda: statuses() == {NOT_SERVING}, timeout=10)
        monkeypatch.setattr(manager, "serving", lambda: True, raising=False)
        wait_for(client.health, timeout=10)
