"""The master's link to each region: one channel, one breaker, retried calls, the last credit.

Every call that changes a region (Delegate, Cancel, Reprioritise) goes through the region's
pybreaker breaker and, except credit probes, through the delegation retry policy. A probe is
one empty Delegate with a short deadline: the dispatcher must not stall on a silent region.
A region with a probe or a delivery still out is ``busy``: the dispatcher neither waits for it
(beyond a short bound) nor gives it more work until it answers, so a frozen region holds up
no other region.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID

import grpc
import grpc.aio
from pybreaker import CircuitBreakerError

from taskmesh.common.breakers import CLOSED, Breaker
from taskmesh.common.errors import NotFoundError
from taskmesh.common.model import ClaimedRun
from taskmesh.common.retry_policies import delegation_retrying
from taskmesh.common.rpc import cluster_pb2, region_pb2, region_pb2_grpc
from taskmesh.common.rpc.limits import message_size_options
from taskmesh.common.rpc.runs import claimed_run_to_proto
from taskmesh.common.rpc.tls import aio_channel
from taskmesh.common.topology import MasterConfig, Topology

R = TypeVar("R")
log = logging.getLogger(__name__)

DELEGATE_TIMEOUT = 5.0  # seconds one Delegate/Cancel/Reprioritise attempt may take
PROBE_TIMEOUT = 1.0  # seconds a credit probe may take
PROBE_WAIT = 0.5  # seconds a dispatch round waits for probes; a slower one answers later
ROUND_WAIT = 1.0  # seconds a dispatch round waits for deliveries; a slower one settles later
DESCRIBE_TIMEOUT = 1.0  # seconds a status call may take
MAX_BATCH = 500  # runs per Delegate call, whatever credit a region advertises
CALL_FAILURES = (grpc.aio.AioRpcError, CircuitBreakerError)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A run a region did not take, and why (the RefusalReason name)."""

    run_id: str
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """A region's answer to one Delegate batch."""

    accepted: frozenset[UUID]
    refused: tuple[Refusal, ...]
    credit: int


class RegionClient:
    """One region as the master reaches it."""

    def __init__(
        self,
        name: str,
        address: str,
        config: MasterConfig,
        master_id: str,
        fallbacks: tuple[str, ...] = (),
    ) -> None:
        """Open a lazy channel to ``address``; nothing is sent until the first call."""
        self.name = name
        self.address = address
        self.fallbacks = fallbacks  # ordered spillover regions for ``prefer`` runs
        self.credit: int | None = None  # free queue room last advertised; None: not known
        self.queue_depth = 0
        self.reachable = False
        self.breaker = Breaker(f"region:{name}", config.breaker)
        self._retry = config.delegation_retry
        self._master_id = master_id
        self._heard_at = -math.inf  # monotonic time of the last answer or failure
        self._calls = 0  # probes and deliveries still out
        self._trial = asyncio.Lock()
        self._channel = aio_channel(address, config.tls, message_size_options())
        self._stub = region_pb2_grpc.RegionStub(self._channel)

    @property
    def breaker_state(self) -> str:
        """pybreaker's state name: ``closed``, ``open`` or ``half-open``."""
        return self.breaker.state

    @property
    def busy(self) -> bool:
        """True while a probe or a delivery to the region is still out."""
        return self._calls > 0

    def needs_probe(self, now: float, interval: float) -> bool:
        """True when the credit is unknown or zero and was last heard of ``interval`` ago."""
        return (self.credit is None or self.credit == 0) and now - self._heard_at >= interval

    def forget_credit(self) -> None:
        """Treat the credit as unknown (the region was reaped or refused to answer)."""
        self.credit = None

    async def delegate(self, runs: Sequence[ClaimedRun]) -> Delivery:
        """Send one batch; retried on transient errors, guarded by the breaker."""
        request = region_pb2.DelegateRequest(
            runs=[claimed_run_to_proto(run) for run in runs], master_id=self._master_id
        )
        with self._out():
            response = await self._recorded(
                self._retried(lambda: self._stub.Delegate(request, timeout=DELEGATE_TIMEOUT))
            )
        self._heard(response.credit, response.queue_depth)
        refused = tuple(
            Refusal(item.run_id, region_pb2.RefusalReason.Name(item.reason), item.detail)
            for item in response.refused
        )
        return Delivery(self._run_ids(response.accepted_run_ids), refused, response.credit)

    async def probe(self) -> int | None:
        """Ask for the credit with an empty Delegate (one try); None when unreachable."""
        request = region_pb2.DelegateRequest(master_id=self._master_id)
        try:
            with self._out():
                response = await self._recorded(
                    self._guarded(lambda: self._stub.Delegate(request, timeout=PROBE_TIMEOUT))
                )
        except CALL_FAILURES as error:
            log.debug("region %s: credit probe failed: %s", self.name, failure_text(error))
            return None
        self._heard(response.credit, response.queue_depth)
        return response.credit

    async def cancel(
        self, runs: Sequence[region_pb2.RunRef], reason: str
    ) -> region_pb2.CancelRunsResponse:
        """Ask the region to drop or stop these runs."""
        request = region_pb2.CancelRunsRequest(runs=runs, reason=reason)
        return await self._recorded(
            self._retried(lambda: self._stub.Cancel(request, timeout=DELEGATE_TIMEOUT))
        )

    async def reprioritise(
        self, runs: Sequence[region_pb2.RunPriority]
    ) -> region_pb2.ReprioritiseResponse:
        """Give queued runs their new priority."""
        request = region_pb2.ReprioritiseRequest(runs=runs)
        return await self._recorded(
            self._retried(lambda: self._stub.Reprioritise(request, timeout=DELEGATE_TIMEOUT))
        )

    async def describe(self) -> cluster_pb2.RegionStatus | None:
        """The region's own status, or None when it does not answer in time (no breaker)."""
        try:
            response = await self._stub.Describe(
                region_pb2.DescribeRequest(), timeout=DESCRIBE_TIMEOUT
            )
        except grpc.aio.AioRpcError:
            return None
        return response.status

    async def drain_worker(
        self, request: cluster_pb2.DrainWorkerRequest
    ) -> cluster_pb2.DrainWorkerResponse:
        """Ask the region to drain one of its workers (no retry: the operator sees the error)."""
        return await self._stub.DrainWorker(request, timeout=DESCRIBE_TIMEOUT)

    async def close(self) -> None:
        """Close the channel; calls in flight fail."""
        await self._channel.close()

    def _run_ids(self, texts: Sequence[str]) -> frozenset[UUID]:
        """Run ids a region answered with; malformed ones are logged and left out."""
        ids = set()
        for text in texts:
            try:
                ids.add(UUID(text))
            except ValueError:
                log.warning("region %s answered with a malformed run id %r", self.name, text)
        return frozenset(ids)

    @contextlib.contextmanager
    def _out(self) -> Iterator[None]:
        """Count a probe or delivery as out (``busy``) until it returns or fails."""
        self._calls += 1
        try:
            yield
        finally:
            self._calls -= 1

    def _heard(self, credit: int, queue_depth: int) -> None:
        """Remember what the region last advertised."""
        self.credit = max(0, credit)
        self.queue_depth = queue_depth
        self.reachable = True
        self._heard_at = time.monotonic()

    async def _recorded(self, call: Awaitable[R]) -> R:
        """Await ``call``; on failure the region is unreachable and its credit unknown."""
        try:
            return await call
        except CALL_FAILURES:
            self.reachable = False
            self.credit = None
            self._heard_at = time.monotonic()
            raise

    async def _retried(self, call: Callable[[], Awaitable[R]]) -> R:
        """``call`` under the delegation retry policy, each try guarded by the breaker."""
        async for attempt in delegation_retrying(self._retry):
            with attempt:
                return await self._guarded(call)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _guarded(self, call: Callable[[], Awaitable[R]]) -> R:
        """One try through the breaker; while it is not closed, one trial at a time."""
        if self.breaker.state == CLOSED:
            with self.breaker.circuit.calling():
                return await call()
        async with self._trial:  # pybreaker lets every call through while half-open
            with self.breaker.circuit.calling():
                return await call()


class RegionClients:
    """The clients of every topology region, in topology order."""

    def __init__(self, clients: Sequence[RegionClient]) -> None:
        """Hold ``clients``; see ``for_topology``."""
        self._clients = {client.name: client for client in clients}
        self._probes: set[asyncio.Task[int | None]] = set()  # probes a round stopped waiting for

    @classmethod
    def for_topology(
        cls, topology: Topology, addresses: Mapping[str, str], master_id: str
    ) -> RegionClients:
        """A client per region, dialling ``addresses[name]`` or the topology's address."""
        clients = [
            RegionClient(
                region.name,
                addresses.get(region.name, str(region.grpc)),
                topology.master,
                master_id,
                region.fallbacks,
            )
            for region in topology.regions
        ]
        return cls(clients)

    def __iter__(self) -> Iterator[RegionClient]:
        """The clients in topology order."""
        return iter(self._clients.values())

    @property
    def fallbacks(self) -> dict[str, tuple[str, ...]]:
        """Each region's ordered fallback regions (regions without any left out)."""
        return {client.name: client.fallbacks for client in self if client.fallbacks}

    def get(self, name: str) -> RegionClient:
        """The client of region ``name``; ``NotFoundError`` if the topology has none."""
        try:
            return self._clients[name]
        except KeyError:
            raise NotFoundError(f'unknown region "{name}"') from None

    async def credits(self, probe_interval: float, wait: float = PROBE_WAIT) -> dict[str, int]:
        """Each reachable region's credit (capped per batch), probing where it is not known.

        Probes are waited for ``wait`` seconds at most; one still out then finishes on its own.
        A busy region counts as taking work but full (0), so its ``prefer`` runs do not spill
        while a slow answer is on its way; an unreachable one (credit unknown, breaker open) is
        left out.
        """
        now = time.monotonic()
        stale = [c for c in self if not c.busy and c.needs_probe(now, probe_interval)]
        if stale:
            probes = [asyncio.create_task(c.probe(), name=f"probe-{c.name}") for c in stale]
            self._probes.update(probes)
            for probe in probes:
                probe.add_done_callback(self._probes.discard)
            await asyncio.wait(probes, timeout=wait)
        return {
            client.name: 0 if client.busy else min(client.credit, MAX_BATCH)
            for client in self
            if client.credit is not None and client.breaker_state != "open"
        }

    async def close(self) -> None:
        """Close every channel (calls in flight fail) and wait for the probes still out."""
        await asyncio.gather(*(client.close() for client in self))
        if self._probes:
            await asyncio.wait(set(self._probes))


def failure_text(error: BaseException) -> str:
    """A short text of a failed call, for logs."""
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error)
