"""Shared pieces of the master's integration tests (no tests here).

``FakeRegion`` is a real grpc.aio ``Region`` server on 127.0.0.1:0 that records every Delegate
batch and answers with the credit and refusals a test chooses. ``running_master`` serves a real
``Master`` (real ledger, real listeners) in the test's event loop. Test modules import these
by module name; fixtures stay in each module.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import grpc
import grpc.aio

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import ClaimedRun
from taskmesh.common.rpc import cluster_pb2, region_pb2, region_pb2_grpc
from taskmesh.common.rpc.runs import claimed_run_from_proto
from taskmesh.common.topology import (
    Address,
    BreakerConfig,
    MasterConfig,
    RegionConfig,
    RetryConfig,
    Topology,
)
from taskmesh.master.daemon import BoundAddresses, Master

LOOPBACK = Address("127.0.0.1", 0)


def make_topology(
    regions: tuple[str, ...] = ("eu", "us"),
    *,
    dispatch_interval: float = 0.05,
    heartbeat_timeout: float = 10.0,
    fail_max: int = 3,
    attempts: int = 5,
    reset_timeout: float = 30.0,
    shutdown_timeout: float = 10.0,
) -> Topology:
    """A topology of loopback listeners with fast timings for tests."""
    master = MasterConfig(
        grpc=LOOPBACK,
        http=LOOPBACK,
        dispatch_interval=timedelta(seconds=dispatch_interval),
        region_heartbeat_timeout=timedelta(seconds=heartbeat_timeout),
        shutdown_timeout=timedelta(seconds=shutdown_timeout),
        breaker=BreakerConfig(fail_max=fail_max, reset_timeout=timedelta(seconds=reset_timeout)),
        delegation_retry=RetryConfig(
            attempts=attempts,
            initial_backoff=timedelta(milliseconds=10),
            max_backoff=timedelta(milliseconds=40),
        ),
    )
    return Topology(regions=tuple(RegionConfig(name) for name in regions), master=master)


@dataclass
class FakeRegion(region_pb2_grpc.RegionServicer):
    """A Region server whose answers the test sets; it records what it was sent."""

    name: str
    credit: int = 100
    refuse: Callable[[ClaimedRun], int] | None = None  # RefusalReason for a run, 0 to accept
    fail_with: grpc.StatusCode | None = None  # abort non-empty Delegates with this code
    fail_next: int = 0  # abort this many more non-empty Delegates with UNAVAILABLE
    fail_probes: bool = False  # abort empty Delegates too
    constant_credit: bool = False  # accepted runs leave at once (the credit never drops)
    delay: float = 0.0  # seconds each non-empty Delegate takes
    incoming: int = 0  # non-empty Delegate calls received (counted before any delay)
    gate: asyncio.Event | None = None  # when set to an Event, non-empty Delegates wait for it
    waiting: int = 0  # non-empty Delegate calls waiting at the gate now
    batches: list[list[ClaimedRun]] = field(default_factory=list)
    probes: int = 0
    failed_calls: int = 0
    cancelled: list[str] = field(default_factory=list)
    reprioritised: list[tuple[str, int]] = field(default_factory=list)
    address: str = ""
    _server: grpc.aio.Server | None = None

    @property
    def delegated(self) -> list[ClaimedRun]:
        """Every run received in a batch, in order."""
        return [run for batch in self.batches for run in batch]

    async def start(self) -> str:
        """Listen on a free loopback port; returns ``host:port``."""
        server = grpc.aio.server()
        region_pb2_grpc.add_RegionServicer_to_server(self, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server
        self.address = f"127.0.0.1:{port}"
        return self.address

    async def stop(self) -> None:
        """Stop at once."""
        if self._server is not None:
            await self._server.stop(None)

    async def Delegate(
        self, request: region_pb2.DelegateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> region_pb2.DelegateResponse:
        """Record the batch; accept up to the credit unless told to refuse or fail."""
        if not request.runs:
            return await self._probe(context)
        self.incoming += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            self.failed_calls += 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "fake region failure")
        if self.fail_with is not None:
            self.failed_calls += 1
            await context.abort(self.fail_with, "fake region failure")
        runs = [claimed_run_from_proto(run) for run in request.runs]
        if self.gate is not None:
            self.waiting += 1
            try:
                await self.gate.wait()  # frozen: no answer until the test opens the gate
            finally:
                self.waiting -= 1
        await asyncio.sleep(self.delay)
        self.batches.append(runs)
        accepted, refused = [], []
        for run in runs:
            reason = self.refuse(run) if self.refuse is not None else 0
            if not reason and self.credit <= 0:
                reason = region_pb2.REFUSAL_REASON_NO_CREDIT
            if reason:
                refused.append(region_pb2.RefusedRun(run_id=str(run.run_id), reason=reason))
            else:
                accepted.append(str(run.run_id))
                self.credit -= 0 if self.constant_credit else 1
        return region_pb2.DelegateResponse(
            accepted_run_ids=accepted, refused=refused, credit=self.credit
        )

    async def _probe(
        self, context: grpc.aio.ServicerContext[Any, Any]
    ) -> region_pb2.DelegateResponse:
        """Answer a credit probe."""
        self.probes += 1
        if self.fail_probes and self.fail_with is not None:
            self.failed_calls += 1
            await context.abort(self.fail_with, "fake region failure")
        return region_pb2.DelegateResponse(credit=self.credit)

    async def Cancel(
        self, request: region_pb2.CancelRunsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> region_pb2.CancelRunsResponse:
        """Record and dequeue every run."""
        ids = [ref.run_id for ref in request.runs]
        self.cancelled.extend(ids)
        return region_pb2.CancelRunsResponse(dequeued_run_ids=ids)

    async def Reprioritise(
        self,
        request: region_pb2.ReprioritiseRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> region_pb2.ReprioritiseResponse:
        """Record the new priorities."""
        self.reprioritised.extend((item.run.run_id, item.priority) for item in request.runs)
        return region_pb2.ReprioritiseResponse(run_ids=[item.run.run_id for item in request.runs])

    async def Describe(
        self, request: region_pb2.DescribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> region_pb2.DescribeResponse:
        """The credit and queue depth."""
        status = cluster_pb2.RegionStatus(name=self.name, credit=self.credit, queue_depth=7)
        return region_pb2.DescribeResponse(status=status)


@asynccontextmanager
async def fake_regions(*names: str, **settings: Any) -> AsyncIterator[dict[str, FakeRegion]]:
    """Started fake regions by name, stopped at exit."""
    regions = {name: FakeRegion(name, **settings) for name in names}
    try:
        for region in regions.values():
            await region.start()
        yield regions
    finally:
        for region in regions.values():
            await region.stop()


@dataclass
class RunningMaster:
    """A served master and where it listens."""

    master: Master
    bound: BoundAddresses
    task: asyncio.Task[None]

    @property
    def grpc(self) -> str:
        """``host:port`` of its gRPC listener."""
        return str(self.bound.grpc)

    @property
    def http(self) -> str:
        """``http://host:port`` of its HTTP listener."""
        return f"http://{self.bound.http}"


@asynccontextmanager
async def running_master(
    topology: Topology,
    ledger: Ledger,
    regions: Mapping[str, FakeRegion] | None = None,
    **options: Any,
) -> AsyncIterator[RunningMaster]:
    """A ``Master`` serving in the background until the block exits (then stopped)."""
    addresses = {name: region.address for name, region in (regions or {}).items()}
    master = Master(topology, ledger, region_addresses=addresses, **options)
    ready: asyncio.Future[BoundAddresses] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(master.serve(ready.set_result), name="test-master")
    done, _ = await asyncio.wait([ready, task], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        await task  # raises what made it fail
    try:
        yield RunningMaster(master, await ready, task)
    finally:
        master.stop()
        await asyncio.wait_for(task, timeout=20)


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    within: float = 30.0,  # a bound only a hang reaches: the machine is shared and noisy
    interval: float = 0.02,
) -> None:
    """Poll ``check`` until it is true; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


def with_master(topology: Topology, **changes: Any) -> Topology:
    """``topology`` with some master settings replaced."""
    return replace(topology, master=replace(topology.master, **changes))
