"""The region daemon: startup → main loop → shutdown, in the manner of uvicorn's server.

Startup connects to the ledger (waiting while it is unavailable) and binds the gRPC and HTTP
listeners. The main loop runs every background task under one TaskGroup, each named, until
``request_shutdown``. Shutdown hands the work back (see ``handover``), then stops the loops,
the listeners and the ledger pool. Signals are not handled here but by the entry point.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as grpc_health

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import RegionState
from taskmesh.common.probes import Probes, ProbeServer, Readiness
from taskmesh.common.retry_policies import ledger_retrying
from taskmesh.common.rpc import region_pb2_grpc
from taskmesh.common.rpc.limits import message_size_options
from taskmesh.common.rpc.tls import add_port
from taskmesh.common.systemd import WatchdogConfig, start_watchdog
from taskmesh.common.topology import Address, RegionConfig
from taskmesh.region.assigner import Assigner
from taskmesh.region.autoscaler import Autoscaler
from taskmesh.region.breakers import BreakerBoard
from taskmesh.region.delegation import RegionService
from taskmesh.region.handover import Handover
from taskmesh.region.heartbeat import Heartbeat
from taskmesh.region.ledger_writer import LedgerWriter
from taskmesh.region.metrics import RegionMetrics
from taskmesh.region.orphans import DelegationAudit, reclaim_previous_work
from taskmesh.region.runtime import RegionRuntime
from taskmesh.region.status import readiness, region_status
from taskmesh.region.watchdog import WorkerWatchdog
from taskmesh.region.worker_link import WorkerLinkService
from taskmesh.region.worker_sessions import WorkerSessions

log = logging.getLogger(__name__)

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
STREAM_CLOSE_GRACE = 2.0  # seconds for open streams to deliver their last messages
WRITER_STOP_GRACE = 1.0  # seconds for the writer to return once the handover flushed it


class BackgroundLoop(Protocol):
    """A loop of the main TaskGroup: runs until asked to stop."""

    async def run(self) -> None:
        """Loop until stopped."""
        ...

    def stop(self) -> None:
        """Ask ``run`` to return."""
        ...


@dataclass(frozen=True, slots=True)
class _Parts:
    """The components of one running region."""

    ledger: Ledger
    runtime: RegionRuntime
    sessions: WorkerSessions
    heartbeat: Heartbeat
    loops: dict[str, BackgroundLoop]
    health: grpc_health.HealthServicer
    server: grpc.aio.Server
    http: ProbeServer


@dataclass(frozen=True, slots=True)
class RegionHandle:
    """What a running region tells whoever started it: where it listens, how to stop it."""

    name: str
    grpc_address: Address
    http_address: Address
    request_shutdown: Callable[[], None]


def advertised(address: Address) -> Address:
    """The address others dial: a wildcard bind is advertised under the host name."""
    return Address(socket.getfqdn(), address.port) if address.host in WILDCARD_HOSTS else address


class RegionDaemon:
    """One regional scheduler process."""

    def __init__(
        self,
        config: RegionConfig,
        database_url: str,
        *,
        grpc_address: Address | None = None,
        http_address: Address | None = None,
        watchdog: WatchdogConfig | None = None,
    ) -> None:
        self.config = config
        self._watchdog = watchdog
        self._database_url = database_url
        self._grpc_address = grpc_address or config.grpc
        self._http_address = http_address or config.http
        self._should_exit = asyncio.Event()
        self._force_exit = asyncio.Event()

    def request_shutdown(self) -> None:
        """Begin a graceful shutdown; asked twice, cut its waits short."""
        if self._should_exit.is_set():
            self._force_exit.set()
        self._should_exit.set()

    async def serve(self, on_ready: Callable[[RegionHandle], None] | None = None) -> bool:
        """Run until shut down; True when every run was handed back or finished."""
        ledger = await self._connect_unless_stopped()
        if ledger is None:
            return True  # stopped before it held any work
        try:
            return await self._serve_with(ledger, on_ready)
        finally:
            await ledger.close()

    async def _connect_unless_stopped(self) -> Ledger | None:
        """Connect to the ledger; None when shutdown is requested first."""
        connecting = asyncio.ensure_future(self._connect())
        stopping = asyncio.ensure_future(self._should_exit.wait())
        try:
            await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not connecting.done():
                connecting.cancel()
        return None if connecting.cancelled() else connecting.result()

    async def _connect(self) -> Ledger:
        """Connect to the ledger, waiting for it while it is unavailable."""
        name = f"taskmesh-region-{self.config.name}"
        async for attempt in ledger_retrying():
            with attempt:
                return await Ledger.connect(self._database_url, application_name=name)
        raise AssertionError("unreachable: the retry never gives up")

    async def _serve_with(
        self, ledger: Ledger, on_ready: Callable[[RegionHandle], None] | None
    ) -> bool:
        """Build the region around a connected ledger, serve, and shut down."""
        parts = self._build(ledger)
        try:
            handle = await self._startup(parts)
            async with asyncio.TaskGroup() as tasks:
                writing = tasks.create_task(parts.runtime.writer.run(), name="ledger-writer")
                started = [writing]
                for name, loop in parts.loops.items():
                    started.append(tasks.create_task(loop.run(), name=name))
                watchdog = start_watchdog(self._watchdog, tasks, started)
                await parts.health.set("", health_pb2.HealthCheckResponse.SERVING)
                log.info(
                    "region %s ready: grpc=%s http=%s",
                    handle.name,
                    handle.grpc_address,
                    handle.http_address,
                )
                if on_ready is not None:
                    on_ready(handle)
                await self._should_exit.wait()
                if watchdog is not None:
                    watchdog.stop()
                complete = await self._shutdown(parts, writing)
            await parts.heartbeat.beat(RegionState.DOWN if complete else RegionState.DRAINING)
            return complete
        finally:
            await parts.server.stop(STREAM_CLOSE_GRACE)
            await parts.http.stop()

    def _build(self, ledger: Ledger) -> _Parts:
        """Every component of the region, wired, nothing started."""
        config = self.config
        metrics = RegionMetrics(config.name)
        writer = LedgerWriter(ledger, lost_retry_limit=config.lost_run_retries, observer=metrics)
        runtime = RegionRuntime(config, writer, BreakerBoard(config.breakers), metrics=metrics)
        sessions = WorkerSessions(runtime)
        heartbeat = Heartbeat(runtime, ledger)
        loops: dict[str, BackgroundLoop] = {
            "assigner": Assigner(runtime),
            "worker-watchdog": WorkerWatchdog(runtime, sessions),
            "heartbeat": heartbeat,
            "delegation-audit": DelegationAudit(runtime, ledger),
        }
        if config.autoscaling is not None:
            loops["autoscaler"] = Autoscaler(runtime, config.autoscaling)

        async def report() -> Readiness:
            return readiness(runtime, heartbeat.ledger_reachable and writer.ledger_available)

        health = grpc_health.HealthServicer()
        server = self._grpc_server(runtime, sessions, health, heartbeat)
        http = ProbeServer(self._http_address, Probes(report, metrics.registry))
        return _Parts(ledger, runtime, sessions, heartbeat, loops, health, server, http)

    async def _startup(self, parts: _Parts) -> RegionHandle:
        """Take back a previous process's work, bind the listeners, write the first heartbeat."""
        await reclaim_previous_work(parts.runtime, parts.ledger)
        grpc_address = await self._start_grpc(parts.server, parts.runtime)
        http_address = await parts.http.start()
        await parts.heartbeat.beat()  # the region's row exists before anyone is told it is up
        return RegionHandle(self.config.name, grpc_address, http_address, self.request_shutdown)

    async def _shutdown(self, parts: _Parts, writing: asyncio.Task[None]) -> bool:
        """Hand the work over, then stop the loops; True when nothing was left behind."""
        await parts.health.enter_graceful_shutdown()
        handover = Handover(
            parts.runtime, parts.sessions, parts.heartbeat, parts.ledger, self._force_exit
        )
        complete = await handover.run()
        for loop in parts.loops.values():
            loop.stop()
        parts.runtime.writer.stop()
        await asyncio.wait({writing}, timeout=WRITER_STOP_GRACE)
        if not writing.done():  # still retrying an unavailable ledger: give up on it
            writing.cancel()
            return False
        return complete

    def _grpc_server(
        self,
        runtime: RegionRuntime,
        sessions: WorkerSessions,
        health: grpc_health.HealthServicer,
        heartbeat: Heartbeat,
    ) -> grpc.aio.Server:
        """The gRPC server with the Region, WorkerLink and health services."""
        server = grpc.aio.server(options=message_size_options())
        describe = lambda: region_status(runtime, heartbeat.heartbeat_at)  # noqa: E731
        region_pb2_grpc.add_RegionServicer_to_server(RegionService(runtime, describe), server)
        region_pb2_grpc.add_WorkerLinkServicer_to_server(
            WorkerLinkService(runtime, sessions), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        return server

    async def _start_grpc(self, server: grpc.aio.Server, runtime: RegionRuntime) -> Address:
        """Bind and start the gRPC server; returns (and advertises) the bound address."""
        port = add_port(server, str(self._grpc_address), self.config.tls)
        bound = self._grpc_address.with_port(port)
        runtime.address = str(advertised(bound))
        await server.start()
        return bound
