"""Polling: a condition in a test, a server's grpc.health.v1 service."""

from __future__ import annotations

import time
from collections.abc import Callable

_SERVICE = b"tunewire.v1.TuningService"
_HEALTH_REQUEST = b"\x0a" + bytes([len(_SERVICE)]) + _SERVICE  # HealthCheckRequest(service=_SERVICE)
_HEALTH_SERVING = b"\x08\x01"  # HealthCheckResponse(status=SERVING)
# Reconnect quickly: grpc's default backoff (1 s, growing) would hide how fast the server came up.
_FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 5), ("grpc.min_reconnect_backoff_ms", 5),
                   ("grpc.max_reconnect_backoff_ms", 20)]


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05):
    """Poll until `predicate()` is truthy; return its value or fail the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def wait_serving(address: str, timeout: float, alive: Callable[[], bool] = lambda: True,
                 interval: float = 0.005) -> float:
    """Poll grpc.health.v1 Health/Check until SERVING; returns time.monotonic() of the first SERVING
    answer."""
    import grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address, options=_FAST_RECONNECT) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        while True:
            try:
                if check(_HEALTH_REQUEST, timeout=0.25) == _HEALTH_SERVING:
                    return time.monotonic()
            except grpc.RpcError:
                pass
            if not alive():
                raise RuntimeError(f"the server at {address} exited before SERVING")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server at {address} was not SERVING within {timeout} s")
            time.sleep(interval)
