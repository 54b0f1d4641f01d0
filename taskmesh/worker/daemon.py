"""The worker daemon: startup → main loop → shutdown, in the manner of uvicorn's server.

``Worker.run()`` starts the health endpoint, opens the slot pool and keeps the region link up
until ``stop()`` (which only sets an event). Then it drains: it announces ``draining``, lets
running commands finish within the shutdown timeout, stops what is left (each reported FAILED
with "worker shut down ..."), waits a little for the region to ack every result, and returns.
Signals are not handled here but in the entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from taskmesh.common.probes import Component, Probes, ProbeServer, Readiness
from taskmesh.common.retry_policies import Backoff
from taskmesh.common.systemd import WatchdogConfig, start_watchdog
from taskmesh.common.topology import Address
from taskmesh.worker.engine import WorkerEngine
from taskmesh.worker.grpc_health import GrpcHealth
from taskmesh.worker.messages import Result
from taskmesh.worker.metrics import WorkerFigures, WorkerMetrics
from taskmesh.worker.orphan_guard import OrphanGuard
from taskmesh.worker.region_link import LinkState
from taskmesh.worker.settings import WorkerSettings
from taskmesh.worker.slots import Stop, StopKind

logger = logging.getLogger(__name__)

LINK_CLOSE_TIMEOUT = timedelta(seconds=5)


class Worker:
    """One worker process: executes its region's assignments in slots and reports back."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        backoff: Backoff | None = None,
        watchdog: WatchdogConfig | None = None,
    ) -> None:
        self.settings = settings
        self._watchdog = watchdog
        self.guard = OrphanGuard()
        self.engine = WorkerEngine(
            settings,
            drain=self._drain_requested,
            finished=self._count_finished,
            guard=self.guard,
            backoff=backoff,
        )
        self.outbox = self.engine.outbox
        self.slots = self.engine.slots
        self.foreman = self.engine.foreman
        self.link = self.engine.link
        self.metrics = WorkerMetrics(settings.worker_id, self._figures)
        self._http = ProbeServer(settings.http, Probes(self._readiness, self.metrics.registry))
        self._grpc = GrpcHealth(settings.grpc, lambda: bool(self.status()["ready"]))
        self._stopping = asyncio.Event()
        self._forced = asyncio.Event()
        self._stop_reason = "stop requested"
        self._grace = settings.shutdown_timeout

    @property
    def worker_id(self) -> str:
        """The id this worker registers under."""
        return self.settings.worker_id

    @property
    def http_address(self) -> Address:
        """The address the HTTP probes actually listen on (known once ``run`` started)."""
        return self._http.address

    @property
    def grpc_address(self) -> Address:
        """The address the gRPC health service listens on (known once ``run`` started)."""
        return self._grpc.address

    @property
    def draining(self) -> bool:
        """True once the worker stopped taking work."""
        return self._stopping.is_set()

    def stop(
        self, reason: str = "stop requested", *, force: bool = False, grace: timedelta | None = None
    ) -> None:
        """Ask ``run`` to drain and return; ``force`` skips waiting for runs and acks."""
        if not self._stopping.is_set():
            self._stop_reason = reason
            self._grace = min(grace, self._grace) if grace is not None else self._grace
            self.foreman.draining = True
            # At once, ahead of any refusal: a region that does not know yet would count each
            # run refused for draining as a failure of this worker and offer it here again.
            self.link.announce_draining(reason, self._grace)
            self._stopping.set()
        if force:
            self._forced.set()

    async def run(self, on_ready: Callable[[Worker], None] | None = None) -> None:
        """Serve until ``stop``, then drain within the shutdown timeout and return.

        ``on_ready`` is called once the HTTP endpoint is bound (``http_address`` is known) and
        the region link is starting; the region need not be reachable yet.
        """
        await self._http.start()
        try:
            await self._grpc.start()
        except BaseException:
            await self._http.stop()
            raise
        self.guard.start()
        logger.info(
            "worker %s: %d slots, region %s at %s",
            self.worker_id,
            self.settings.slots,
            self.settings.region,
            self.settings.region_address,
        )
        try:
            async with self.slots, asyncio.TaskGroup() as tasks:
                link = tasks.create_task(self.link.run(), name="region-link")
                watchdog = start_watchdog(self._watchdog, tasks, [link])
                publisher = tasks.create_task(self._grpc.publish(), name="grpc-health")
                if on_ready is not None:
                    on_ready(self)
                await self._stopping.wait()
                if watchdog is not None:
                    watchdog.stop()
                await self._grpc.shutting_down()
                publisher.cancel()
                await self._drain()
                await self._close_link(link)
        finally:
            self.guard.stop()
            await self._grpc.stop()
            await self._http.stop()
        logger.info("worker %s stopped", self.worker_id)

    def status(self) -> dict[str, object]:
        """What ``/readyz`` shows: link, slots, outbox, last outcome, and whether it is ready."""
        connected = self.link.state is LinkState.CONNECTED
        return {
            "ready": connected and not self.draining,
            "worker_id": self.worker_id,
            "region": self.settings.region,
            "link": self.link.state.value,
            "draining": self.draining,
            "slots": self._slots(),
            "outbox": len(self.outbox),
            "last_outcome": self.foreman.last_outcome(),
        }

    async def _readiness(self) -> Readiness:
        """What ``/readyz`` answers: ready while the region link is up and not draining."""
        status = self.status()
        link = {
            "state": status["link"],
            "region": self.settings.region,
            "address": self.settings.region_address,
        }
        return Readiness(
            f"worker {self.worker_id}",
            (
                Component("region_link", self.link.state is LinkState.CONNECTED, link),
                Component("state", not self.draining, {"draining": self.draining}),
                Component("slots", True, {**self._slots(), "outbox": len(self.outbox)}),
                Component("last_outcome", True, {"run": status["last_outcome"]}),
            ),
        )

    def _slots(self) -> dict[str, int]:
        return {"total": self.slots.total, "in_use": self.slots.in_use}

    def _figures(self) -> WorkerFigures:
        """The gauges' values now."""
        connected = self.link.state is LinkState.CONNECTED
        return WorkerFigures(self.slots.total, self.slots.in_use, connected, len(self.outbox))

    def _count_finished(self, result: Result) -> None:
        """A slot finished a run: count it."""
        self.metrics.count_finished(result.state)

    def _drain_requested(self, reason: str, grace: timedelta | None) -> None:
        """The region asked this worker to drain."""
        self.stop(f"the region asked to drain: {reason or 'no reason given'}", grace=grace)

    async def _drain(self) -> None:
        """Stop taking work, let runs finish within the grace, stop the rest, flush results."""
        grace = self._grace
        logger.info(
            "draining (%s): %d runs running, waiting up to %s",
            self._stop_reason,
            self.slots.in_use,
            grace,
        )
        if not await self._within(self.slots.wait_idle(), grace):
            reason = f"worker shut down ({self._stop_reason}) before the run finished"
            count = self.slots.stop_all(Stop(StopKind.SHUTDOWN, reason))
            why = "stop forced" if self._forced.is_set() else f"shutdown timeout of {grace} over"
            logger.warning("stopping %d runs still running (%s)", count, why)
            await self.slots.wait_idle()
        if not await self._within(self.outbox.wait_empty(), self.settings.flush_timeout):
            self._report_unacked()

    async def _within(self, waiter: Awaitable[None], bound: timedelta) -> bool:
        """Wait for ``waiter`` up to ``bound`` or a forced stop; True if it completed."""
        done_task = asyncio.ensure_future(waiter)
        forced = asyncio.create_task(self._forced.wait())
        try:
            await asyncio.wait(
                (done_task, forced),
                timeout=bound.total_seconds(),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            done_task.cancel()
            forced.cancel()
        return done_task.done() and not done_task.cancelled()

    def _report_unacked(self) -> None:
        """Name every result the region never acknowledged: they are lost with this process."""
        for key in self.outbox.keys:
            logger.error("the result of run %s was never acknowledged by the region", key)

    async def _close_link(self, link: asyncio.Task[None]) -> None:
        """Half-close the stream and stop the link; cancel it if it does not stop in time."""
        self.link.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINK_CLOSE_TIMEOUT.total_seconds()):
                await asyncio.shield(link)
        link.cancel()
