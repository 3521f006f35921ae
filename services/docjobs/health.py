"""Health checks of the services, as a supervisor asks them: `docjobs up` while it starts the stack, and
`docjobs health` in a container's HEALTHCHECK (the images carry no curl and no grpc_health_probe)."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def grpc_healthy(address: str, timeout: float = 1.0) -> Callable[[], bool]:
    """True when the gRPC health service at `address` answers SERVING for the server as a whole."""

    def check() -> bool:
        try:
            with grpc.insecure_channel(address) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                # typeshed's HealthStub declares none of the stub's methods.
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)  # type: ignore[attr-defined]
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
        except grpc.RpcError:
            return False

    return check


def http_ok(url: str, timeout: float = 1.0) -> Callable[[], bool]:
    """True when `url` answers 200."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    return check
