"""The worker's standard gRPC health service, on a small gRPC server of its own.

The worker is otherwise only a gRPC client (of its region), so this server carries nothing but
``grpc.health.v1.Health``, on its own address (``--grpc-address``, by default a free loopback
port, announced on the READY line). It says SERVING exactly when ``/readyz`` says ready: the
region link is up and the worker is not draining; NOT_SERVING for good once it drains.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as grpc_health

from taskmesh.common.topology import Address

PUBLISH_INTERVAL = 0.2  # seconds between looks at the worker's readiness
STOP_GRACE = 1.0  # seconds for Watch calls in flight once shutting down
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class GrpcHealth:
    """A gRPC server with the health service, following ``ready``."""

    def __init__(self, address: Address, ready: Callable[[], bool]) -> None:
        """Serve on ``address`` once started; ``ready`` is polled by ``publish``."""
        self._requested = address
        self._ready = ready
        self._servicer = grpc_health.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self.address = address

    async def start(self) -> Address:
        """Bind and start, NOT_SERVING until ``publish`` sees the worker ready."""
        await self._servicer.set("", NOT_SERVING)
        server = grpc.aio.server(options=(("grpc.so_reuseport", 0),))
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)
        try:
            port = server.add_insecure_port(str(self._requested))
        except RuntimeError as error:
            raise OSError(f"cannot listen for gRPC health on {self._requested}") from error
        await server.start()
        self._server = server
        self.address = self._requested.with_port(port)
        return self.address

    async def publish(self) -> None:
        """Keep the served status equal to ``ready()`` until cancelled."""
        served: bool | None = None
        while True:
            ready = self._ready()
            if ready != served:
                await self._servicer.set("", SERVING if ready else NOT_SERVING)
                served = ready
            await asyncio.sleep(PUBLISH_INTERVAL)

    async def shutting_down(self) -> None:
        """NOT_SERVING for good: the worker drains."""
        await self._servicer.enter_graceful_shutdown()

    async def stop(self) -> None:
        """Stop the server; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(STOP_GRACE)
