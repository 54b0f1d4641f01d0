"""Whether the master takes work: the gRPC health service and ``/readyz`` read the same flag."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from taskmesh.common.errors import TaskmeshError
from taskmesh.common.probes import Component, Readiness
from taskmesh.common.rpc import scheduler_pb2
from taskmesh.master.region_clients import RegionClients

SCHEDULER_SERVICE = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name
SERVICES = ("", SCHEDULER_SERVICE)  # "" is the whole server


class Phase(enum.StrEnum):
    """Where the master is in its life."""

    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"


class Health:
    """The master's phase, published on the standard ``grpc.health.v1.Health`` service."""

    def __init__(self) -> None:
        """Start in ``starting``: not serving until ``serving()`` is called."""
        self.servicer = HealthServicer()
        self.phase = Phase.STARTING

    @property
    def ready(self) -> bool:
        """True while the master takes work."""
        return self.phase is Phase.SERVING

    async def starting(self) -> None:
        """Publish NOT_SERVING before the listeners open."""
        for service in SERVICES:
            await self.servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def serving(self) -> None:
        """Publish SERVING: the listeners are open and the ledger answers."""
        self.phase = Phase.SERVING
        for service in SERVICES:
            await self.servicer.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def draining(self) -> None:
        """Publish NOT_SERVING for good: the master is shutting down."""
        self.phase = Phase.DRAINING
        await self.servicer.enter_graceful_shutdown()


async def readiness(
    health: Health, ping: Callable[[], Awaitable[None]], regions: RegionClients
) -> Readiness:
    """What ``/readyz`` answers: ready while serving and the ledger answers.

    The regions are shown (address, breaker, credit) but do not decide: a master whose regions
    are all down still takes submissions, and a supervisor that gates regions on the master's
    readiness must not wait forever.
    """
    try:
        await ping()
        ledger = Component("ledger", True)
    except TaskmeshError as error:
        ledger = Component("ledger", False, {"error": str(error)})
    links = {
        client.name: {
            "address": client.address,
            "breaker": client.breaker_state,
            "credit": client.credit,
        }
        for client in regions
    }
    return Readiness(
        "master",
        (
            Component("phase", health.ready, {"phase": str(health.phase)}),
            ledger,
            Component("regions", True, links),
        ),
    )
