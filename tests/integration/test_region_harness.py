"""The harness of the region's integration tests, and tests of the region's listeners.

``running_region`` serves a real region (``serve_region``) on 127.0.0.1:0 against the test's
own ledger database; ``FakeWorker`` is a worker written here: a real ``WorkerLink.Connect``
stream the test drives message by message. Runs reach the region the way they do in
production: submitted to the ledger, claimed with the ledger's own API, delegated over gRPC.
Every wait is bounded generously; nothing asserts on speed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import aiohttp
import grpc

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import ClaimedRun, Executor, Run, RunState, TaskSpec
from taskmesh.common.rpc import cluster_pb2, region_pb2, region_pb2_grpc
from taskmesh.common.rpc.runs import claimed_run_to_proto
from taskmesh.common.rpc.values import EXECUTORS, RUN_STATES, timestamp
from taskmesh.common.topology import Address, RegionConfig, Topology, WorkerPoolConfig
from taskmesh.region.command import serve_region
from taskmesh.region.daemon import RegionHandle

REGION = "r1"
WAIT = 60.0  # seconds: a bound only a hang reaches (the machine is shared and noisy)
LOOPBACK = Address("127.0.0.1", 0)
T = TypeVar("T")


def region_config(**fields: Any) -> RegionConfig:
    """A region on loopback with short heartbeats, overridable field by field."""
    defaults: dict[str, Any] = {
        "grpc": LOOPBACK,
        "http": LOOPBACK,
        "heartbeat_interval": timedelta(milliseconds=200),
        "worker_heartbeat_timeout": timedelta(seconds=10),
        "shutdown_timeout": timedelta(seconds=5),
    }
    return RegionConfig(name=REGION, **{**defaults, **fields})


async def eventually(probe: Callable[[], Awaitable[T]], check: Callable[[T], bool]) -> T:
    """Poll ``probe`` until ``check`` holds; fail after ``WAIT`` seconds with the last value."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        value = await probe()
        if check(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {WAIT} s; last value: {value!r}")
        await asyncio.sleep(0.05)


async def run_state(ledger: Ledger, run_id: UUID, state: RunState) -> Run:
    """Wait until the ledger shows the run in ``state``."""
    return await eventually(lambda: ledger.get_run(run_id), lambda run: run.state is state)


class RunningRegion:
    """A served region and a master-side stub to it."""

    def __init__(self, handle: RegionHandle, task: asyncio.Task[None]) -> None:
        self.handle = handle
        self.task = task
        self.channel = grpc.aio.insecure_channel(str(handle.grpc_address))
        self.stub = region_pb2_grpc.RegionStub(self.channel)

    @property
    def address(self) -> str:
        """The region's gRPC address."""
        return str(self.handle.grpc_address)

    async def delegate(self, runs: Iterable[ClaimedRun]) -> region_pb2.DelegateResponse:
        """Delegate claimed runs, best first."""
        request = region_pb2.DelegateRequest(
            runs=[claimed_run_to_proto(run) for run in runs], master_id="test"
        )
        return await self.stub.Delegate(request, timeout=WAIT)

    async def describe(self) -> cluster_pb2.RegionStatus:
        """The region's own status."""
        return (await self.stub.Describe(region_pb2.DescribeRequest(), timeout=WAIT)).status

    async def stop(self) -> None:
        """Shut the region down gracefully and wait for it."""
        self.handle.request_shutdown()
        await asyncio.wait_for(asyncio.shield(self.task), WAIT)


@contextlib.asynccontextmanager
async def running_region(database_url: str, **fields: Any) -> AsyncIterator[RunningRegion]:
    """Serve a region configured by ``fields``; shut it down (gracefully) on exit."""
    topology = Topology(regions=(region_config(**fields),))
    ready: asyncio.Future[RegionHandle] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_region(
            topology, REGION, database_url, on_ready=ready.set_result, handle_signals=False
        )
    )
    done, _ = await asyncio.wait({ready, task}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises what stopped the region
    assert ready in done, "the region did not become ready"
    region = RunningRegion(ready.result(), task)
    try:
        yield region
    finally:
        if not task.done():
            await region.stop()
        await region.channel.close()


class FakeWorker:
    """A worker driven by the test over a real WorkerLink stream."""

    def __init__(
        self,
        address: str,
        worker_id: str,
        slots: int = 2,
        executors: Iterable[Executor] = (Executor.NOOP, Executor.SHELL),
    ) -> None:
        self.worker_id = worker_id
        self.slots = slots
        self.executors = tuple(executors)
        self.channel = grpc.aio.insecure_channel(address)
        self.received: list[region_pb2.RegionMessage] = []
        self.changed = asyncio.Condition()
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, running: Iterable[region_pb2.RunRef] = ()) -> region_pb2.WorkerWelcome:
        """Open the stream, register, and return the welcome."""
        self._call = region_pb2_grpc.WorkerLinkStub(self.channel).Connect()
        register = region_pb2.RegisterWorker(
            worker_id=self.worker_id,
            slots=self.slots,
            executors=[EXECUTORS[executor] for executor in self.executors],
            running=list(running),
            version="test",
        )
        await self.send(region_pb2.WorkerMessage(register=register))
        self._reader = asyncio.create_task(self._read())
        welcome = await self.wait_for(lambda m: m.WhichOneof("body") == "welcome")
        return welcome.welcome

    async def send(self, message: region_pb2.WorkerMessage) -> None:
        """Write one message on the stream."""
        await self._call.write(message)

    async def heartbeat(self, free_slots: int) -> None:
        """Advertise ``free_slots``."""
        await self.send(
            region_pb2.WorkerMessage(heartbeat=region_pb2.WorkerHeartbeat(free_slots=free_slots))
        )

    async def start(self, *runs: region_pb2.RunRef) -> None:
        """Report these runs started now."""
        now = timestamp(datetime.now(UTC))
        starts = [region_pb2.RunStarted(run=run, started_at=now) for run in runs]
        await self.send(region_pb2.WorkerMessage(started=region_pb2.RunsStarted(runs=starts)))

    async def finish(self, run: region_pb2.RunRef, state: RunState, exit_code: int = 0) -> None:
        """Report one result of a started run."""
        now = timestamp(datetime.now(UTC))
        result = region_pb2.RunResult(
            run=run, state=RUN_STATES[state], exit_code=exit_code, started_at=now, finished_at=now
        )
        await self.send(region_pb2.WorkerMessage(results=region_pb2.RunResults(results=[result])))

    async def wait_for(
        self, predicate: Callable[[region_pb2.RegionMessage], bool]
    ) -> region_pb2.RegionMessage:
        """The first message received (ever) that satisfies ``predicate``."""
        async with asyncio.timeout(WAIT), self.changed:
            while True:
                for message in self.received:
                    if predicate(message):
                        return message
                await self.changed.wait()

    def assignments(self) -> list[region_pb2.Assignment]:
        """Every assignment received so far, in order."""
        return [
            a
            for m in self.received
            if m.WhichOneof("body") == "assign"
            for a in m.assign.assignments
        ]

    async def assigned(self, count: int) -> list[region_pb2.Assignment]:
        """Wait until ``count`` assignments in total arrived; return them all."""
        await self.wait_for(lambda _: len(self.assignments()) >= count)
        return self.assignments()

    def acked(self) -> set[str]:
        """Run ids whose results were acked."""
        return {
            r.run_id for m in self.received if m.WhichOneof("body") == "ack" for r in m.ack.runs
        }

    async def close(self) -> None:
        """Half-close the stream, as a worker that leaves would."""
        await self._call.done_writing()

    async def drop(self) -> None:
        """Break the stream (as a crashed worker would) and close the channel."""
        self._call.cancel()
        await self.channel.close()

    async def _read(self) -> None:
        """Collect everything the region sends."""
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for message in self._call:
                async with self.changed:
                    self.received.append(message)
                    self.changed.notify_all()


@contextlib.asynccontextmanager
async def connected(
    region: RunningRegion, worker_id: str, **options: Any
) -> AsyncIterator[FakeWorker]:
    """A FakeWorker registered with ``region``, dropped on exit."""
    worker = FakeWorker(region.address, worker_id, **options)
    await worker.connect()
    try:
        yield worker
    finally:
        await worker.drop()


async def claim(ledger: Ledger, *specs: TaskSpec) -> list[ClaimedRun]:
    """Submit tasks for region r1 and claim their runs, in submission order."""
    now = datetime.now(UTC)
    ids = []
    for spec in specs:
        _, run, _ = await ledger.submit_task(replace(spec, region=REGION), now)
        assert run is not None
        ids.append(run.id)
    claimed = {run.run_id: run for run in await ledger.claim_due_runs({REGION: len(specs)}, now)}
    return [claimed[run_id] for run_id in ids]


def task(name: str = "t", **fields: Any) -> TaskSpec:
    """A task spec, no-op unless ``fields`` say otherwise."""
    return TaskSpec(**{"name": name, "command": "true", "executor": Executor.NOOP, **fields})


def ref_of(assignment: region_pb2.Assignment) -> region_pb2.RunRef:
    """The run reference an assignment carries."""
    return assignment.run


async def test_health_endpoints_report_readiness(database_url: str) -> None:
    async with running_region(database_url) as region:
        url = f"http://{region.handle.http_address}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/healthz") as response:
                assert response.status == 200
                assert (await response.json()) == {"status": "alive"}
            async with http.get(f"{url}/readyz") as response:
                body = await response.json()
                assert response.status == 200, body
                assert (body["daemon"], body["ready"], body["failing"]) == (
                    f"region {REGION}",
                    True,
                    [],
                )
                components = body["components"]
                assert components["ledger"]["ok"] is True
                assert components["state"] == {"ok": True, "state": "up"}
                assert components["workers"]["connected"] == 0
                assert components["master"] == {"ok": True, "last_delegate_seconds_ago": None}
                assert (components["queue"]["depth"], components["queue"]["credit"]) == (0, 1000)
            async with http.get(f"{url}/metrics") as response:
                assert "taskmesh_region_queue_depth" in await response.text()


async def test_the_welcome_tells_the_worker_its_heartbeat_bounds(database_url: str) -> None:
    workers = WorkerPoolConfig(heartbeat_interval=timedelta(milliseconds=300))
    timeout = timedelta(seconds=4)
    async with running_region(
        database_url, workers=workers, worker_heartbeat_timeout=timeout
    ) as region:
        worker = FakeWorker(region.address, "w1")
        welcome = await worker.connect()
        await worker.drop()
    assert welcome.region == REGION
    assert welcome.heartbeat_interval.ToTimedelta() == timedelta(milliseconds=300)
    assert welcome.heartbeat_timeout.ToTimedelta() == timeout
    assert list(welcome.abandon) == []


async def test_heartbeat_rows_carry_address_credit_and_workers(
    database_url: str, ledger: Ledger
) -> None:
    async with running_region(database_url, capacity=7) as region:
        (row,) = await eventually(ledger.list_regions, lambda rows: len(rows) == 1)
        assert (row.name, row.address, row.credit) == (REGION, region.address, 7)
        async with connected(region, "w1", slots=3):
            workers = await eventually(lambda: ledger.list_workers(REGION), bool)
            assert [(w.id, w.slots) for w in workers] == [("w1", 3)]
        await eventually(lambda: ledger.list_workers(REGION), lambda rows: not rows)
