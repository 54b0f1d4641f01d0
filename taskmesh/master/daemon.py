"""The master daemon: startup, main loop, shutdown (the shape of uvicorn's server).

Startup opens the gRPC listener (``Scheduler`` and the standard health service) and the HTTP
listener, then publishes SERVING. The main loop runs every background duty under one TaskGroup
(``master-dispatcher``, ``master-reaper``, ``master-materialiser``, ``master-start-deadlines``,
``master-due-listener``) until ``stop()``. Shutdown publishes NOT_SERVING, stops claiming, lets
the round in flight finish (within ``shutdown_timeout``), then closes the listeners and the
region channels.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc.aio
from aiohttp import web
from grpc_health.v1 import health_pb2_grpc

from taskmesh.common.errors import UnavailableError
from taskmesh.common.ledger import Ledger
from taskmesh.common.probes import Probes, Readiness
from taskmesh.common.rpc import scheduler_pb2_grpc
from taskmesh.common.rpc.limits import message_size_options
from taskmesh.common.systemd import WatchdogConfig, start_watchdog
from taskmesh.common.topology import Address, Topology
from taskmesh.master.auth import ClientAuth
from taskmesh.master.clock import Clock, utc_now
from taskmesh.master.dispatcher import Dispatcher
from taskmesh.master.due_listener import DueListener
from taskmesh.master.grpc_auth import BearerAuthInterceptor
from taskmesh.master.health import Health, readiness
from taskmesh.master.materialiser import Materialiser
from taskmesh.master.metrics import MasterMetrics
from taskmesh.master.reaper import Reaper
from taskmesh.master.region_clients import RegionClients
from taskmesh.master.rest import RestApi
from taskmesh.master.scheduler_service import SchedulerService
from taskmesh.master.start_deadlines import StartDeadlines
from taskmesh.master.task_api import TaskApi

log = logging.getLogger(__name__)

# gRPC enables SO_REUSEPORT by default: two masters could then share a port without an error.
GRPC_OPTIONS = (("grpc.so_reuseport", 0), *message_size_options())
SERVER_GRACE_SECONDS = 5.0  # at most this long for RPCs in flight once the duties stopped


@dataclass(frozen=True, slots=True)
class BoundAddresses:
    """Where the master actually listens (ports chosen by the OS filled in)."""

    grpc: Address
    http: Address


class Master:
    """One master process over one ledger."""

    def __init__(
        self,
        topology: Topology,
        ledger: Ledger,
        *,
        grpc_address: Address | None = None,
        http_address: Address | None = None,
        region_addresses: Mapping[str, str] | None = None,
        stopping: asyncio.Event | None = None,
        clock: Clock = utc_now,
        watchdog: WatchdogConfig | None = None,
    ) -> None:
        """Assemble the parts; nothing listens until ``serve`` (or ``startup``)."""
        config = topology.master
        self._watchdog = watchdog
        self.topology = topology
        self.ledger = ledger
        self.master_id = f"master-{uuid.uuid4().hex[:8]}"
        self.bound: BoundAddresses | None = None
        self._grpc_address = grpc_address or config.grpc
        self._http_address = http_address or config.http
        self._shutdown_timeout = config.shutdown_timeout.total_seconds()
        self._stopping = stopping or asyncio.Event()
        self.health = Health()
        self.auth = ClientAuth.from_file(config.auth.tokens_file)
        self.regions = RegionClients.for_topology(topology, region_addresses or {}, self.master_id)
        self.metrics = MasterMetrics(ledger, self.regions)
        self.api = TaskApi(ledger, self.regions, topology, clock=clock)
        # A pool of its own: claims never wait for a connection behind submissions.
        self._dispatch_ledger = ledger.dedicated("taskmesh-master-dispatcher")
        self.dispatcher = Dispatcher(
            self._dispatch_ledger, self.regions, config, clock=clock, metrics=self.metrics
        )
        self.reaper = Reaper(ledger, self.regions, topology, clock=clock)
        self.materialiser = Materialiser(ledger, self.regions, clock=clock)
        self.start_deadlines = StartDeadlines(ledger, clock=clock)
        self._listener = DueListener(ledger, self.dispatcher)
        self._scheduler = SchedulerService(
            self.api, ledger, self.regions, self._stopping, clock=clock
        )
        self._grpc_server: grpc.aio.Server | None = None
        self._http_runner: web.AppRunner | None = None

    def stop(self) -> None:
        """Ask for a graceful shutdown; idempotent, safe from a signal handler."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """True once a shutdown was asked for."""
        return self._stopping.is_set()

    async def serve(self, on_ready: Callable[[BoundAddresses], None] | None = None) -> None:
        """Start, run until ``stop()``, shut down; ``on_ready`` is called once serving."""
        try:
            bound = await self.startup()
            if on_ready is not None:
                on_ready(bound)
            await self.main_loop()
        finally:
            await self.shutdown()

    async def startup(self) -> BoundAddresses:
        """Open both listeners and publish SERVING; returns the bound addresses."""
        await self.health.starting()
        self._warn_undialable()
        grpc_port = await self._start_grpc()
        http_port = await self._start_http()
        self.bound = BoundAddresses(
            self._grpc_address.with_port(grpc_port), self._http_address.with_port(http_port)
        )
        await self.health.serving()
        log.info("master %s serving: grpc %s, http %s", self.master_id, *self._bound_texts())
        return self.bound

    async def main_loop(self) -> None:
        """Run the background duties until ``stop()``, then drain them."""
        async with asyncio.TaskGroup() as duties:
            draining = [
                duties.create_task(self.dispatcher.run(), name="master-dispatcher"),
                duties.create_task(self.reaper.run(), name="master-reaper"),
                duties.create_task(self.materialiser.run(), name="master-materialiser"),
                duties.create_task(self.start_deadlines.run(), name="master-start-deadlines"),
            ]
            listener = duties.create_task(self._listener.run(), name="master-due-listener")
            watchdog = start_watchdog(self._watchdog, duties, [*draining, listener])
            await self._stopping.wait()
            if watchdog is not None:
                watchdog.stop()
            log.info("master %s draining", self.master_id)
            await self.health.draining()
            listener.cancel()
            self.dispatcher.stop()
            self.reaper.stop()
            self.materialiser.stop()
            self.start_deadlines.stop()
            await self._drain(draining)

    async def shutdown(self) -> None:
        """Publish NOT_SERVING, close the listeners and the region channels."""
        self._stopping.set()
        await self.health.draining()
        if self._grpc_server is not None:
            await self._grpc_server.stop(SERVER_GRACE_SECONDS)
            self._grpc_server = None
        if self._http_runner is not None:
            await self._http_runner.cleanup()
            self._http_runner = None
        await self.regions.close()
        await self._dispatch_ledger.close()
        log.info("master %s stopped", self.master_id)

    async def _drain(self, duties: list[asyncio.Task[None]]) -> None:
        """Wait for the duties to finish their work in flight, cancelling them past the bound."""
        _, late = await asyncio.wait(duties, timeout=self._shutdown_timeout)
        for duty in late:
            log.warning("%s did not finish within the shutdown timeout", duty.get_name())
            duty.cancel()

    async def _start_grpc(self) -> int:
        """Bind and start the gRPC server; returns its port."""
        server = grpc.aio.server(
            options=GRPC_OPTIONS, interceptors=[BearerAuthInterceptor(self.auth)]
        )
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(self._scheduler, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, server)
        try:
            port = server.add_insecure_port(str(self._grpc_address))
        except RuntimeError as error:
            raise UnavailableError(f"cannot listen for gRPC on {self._grpc_address}") from error
        await server.start()
        self._grpc_server = server
        return port

    async def _start_http(self) -> int:
        """Bind and start the HTTP server; returns its port."""
        probes = Probes(self._readiness, self.metrics.registry, self.metrics.refresh)
        app = RestApi(self.api, probes, self.auth).application()
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._http_runner = runner
        site = web.TCPSite(runner, self._http_address.host, self._http_address.port)
        try:
            await site.start()
        except OSError as error:
            raise UnavailableError(f"cannot listen for HTTP on {self._http_address}") from error
        return int(runner.addresses[0][1])

    async def _readiness(self) -> Readiness:
        """The master's ``/readyz`` report."""
        return await readiness(self.health, self.ledger.ping, self.regions)

    def _warn_undialable(self) -> None:
        """Say which regions cannot be reached: port 0 in the topology and no override."""
        for client in self.regions:
            if client.address.endswith(":0"):
                log.warning(
                    "region %s has no address to dial (port 0 in the topology); pass "
                    "--region %s=HOST:PORT. It gets no work meanwhile",
                    client.name,
                    client.name,
                )

    def _bound_texts(self) -> tuple[str, str]:
        """The bound addresses as ``host:port`` texts."""
        assert self.bound is not None
        return str(self.bound.grpc), str(self.bound.http)
