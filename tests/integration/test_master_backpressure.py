"""Backpressure at the master: admission (429 / RESOURCE_EXHAUSTED), parked refusals, and one
dispatching master at a time, through the public interfaces and a real ledger."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest
from test_master_harness import (
    eventually,
    fake_regions,
    make_topology,
    running_master,
    with_master,
)

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import Placement, RunState, TaskSpec
from taskmesh.common.rpc import region_pb2, scheduler_pb2, scheduler_pb2_grpc, task_pb2
from taskmesh.master.dispatcher import Dispatcher
from taskmesh.master.region_clients import RegionClients


async def test_past_the_backlog_bound_rest_answers_429_and_grpc_resource_exhausted(
    ledger: Ledger,
) -> None:
    """The bound holds on both APIs, with a Retry-After; nothing is written for a refusal."""
    topology = with_master(make_topology(("eu",)), max_pending_runs=2)
    async with (
        running_master(topology, ledger) as running,  # eu unreachable: runs stay pending
        aiohttp.ClientSession(running.http) as http,
        grpc.aio.insecure_channel(running.grpc) as channel,
    ):
        for index in range(2):
            async with http.post("/v1/tasks", json={"command": f"echo {index}"}) as response:
                assert response.status in {200, 201}
        async with http.post("/v1/tasks", json={"command": "echo 3"}) as response:
            assert response.status == 429
            assert int(response.headers["Retry-After"]) >= 1
            body = await response.json()
        assert "limit is 2" in body["error"]["message"]
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        request = scheduler_pb2.SubmitRequest(spec=task_pb2.TaskSpec(name="x", command="true"))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Submit(request)
        assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(raised.value.trailing_metadata() or ())
        assert float(trailers["taskmesh-retry-after"]) >= 1
        assert await ledger.count_pending() == 2


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def test_a_run_refused_for_good_is_parked_with_a_doubling_backoff(ledger: Ledger) -> None:
    """UNSUPPORTED does not bounce back every round: parked 1 s, then 2 s, then accepted."""
    clock = Clock()
    spec = TaskSpec(name="odd", command="true", region="eu", placement=Placement.STRICT)
    _, run, _ = await ledger.submit_task(spec, clock.now)
    assert run is not None
    async with fake_regions("eu") as regions:
        eu = regions["eu"]
        eu.refuse = lambda _run: region_pb2.REFUSAL_REASON_UNSUPPORTED
        clients = RegionClients.for_topology(
            make_topology(("eu",)), {"eu": eu.address}, "test-master"
        )
        try:
            dispatcher = Dispatcher(ledger, clients, make_topology(("eu",)).master, clock=clock)
            sent = []
            for step in (0.0, 0.5, 0.6, 1.0, 1.2, 1.0):
                clock.advance(step)
                await dispatcher.dispatch_round()
                sent.append(len(eu.batches))
            # refused at 0 s (parked 1 s), 1.1 s (parked 2 s), 3.3 s (parked 4 s); none between
            assert sent == [1, 1, 2, 2, 3, 3]
            parked = await ledger.get_run(run.id)
            assert parked.state is RunState.PENDING
            assert parked.ready_at == clock.now + timedelta(seconds=3)
            refusals = [e for e in await ledger.events_after(0) if e.detail.get("cause")]
            assert refusals[-1].detail["reason"] == "REFUSAL_REASON_UNSUPPORTED"
            assert refusals[-1].detail["region"] == "eu"
            eu.refuse = None
            clock.advance(4.0)
            outcome = await dispatcher.dispatch_round()
            assert outcome.accepted == 1
            assert (await ledger.get_run(run.id)).state is RunState.DELEGATED
        finally:
            await clients.close()


async def test_two_masters_never_send_a_region_more_than_its_credit(
    ledger: Ledger, database_url: str
) -> None:
    """Only the master holding the dispatch lock dispatches; the other stands by."""
    for index in range(30):
        spec = TaskSpec(name=f"t{index}", command="true", region="eu", placement=Placement.STRICT)
        await ledger.submit_task(spec, datetime.now(UTC))
    topology = make_topology(("eu",))
    settings: dict[str, Any] = {"credit": 10, "delay": 0.3}
    async with (
        fake_regions("eu", **settings) as regions,
        await Ledger.connect(database_url) as other_ledger,
        running_master(topology, ledger, regions),
        running_master(topology, other_ledger, regions),
    ):
        eu = regions["eu"]
        await eventually(lambda: eu.credit == 0, within=10)
        await asyncio.sleep(1.0)  # time for a second master to overshoot, were it dispatching
        assert len(eu.delegated) == 10
        assert await ledger.count_pending() == 20
