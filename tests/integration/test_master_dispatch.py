"""The dispatcher against fake regions (real gRPC servers) and a real ledger."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import grpc
import grpc.aio
import pytest
from test_master_harness import (
    FakeRegion,
    eventually,
    fake_regions,
    make_topology,
    running_master,
)

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import AtSchedule, Placement, Run, RunState, TaskSpec
from taskmesh.common.rpc import region_pb2, scheduler_pb2, scheduler_pb2_grpc, task_pb2
from taskmesh.common.rpc.tasks import task_spec_to_proto
from taskmesh.common.topology import Topology
from taskmesh.master.dispatcher import Dispatcher
from taskmesh.master.region_clients import RegionClients


@asynccontextmanager
async def dispatching(
    ledger: Ledger, topology: Topology, regions: dict[str, FakeRegion]
) -> AsyncIterator[tuple[Dispatcher, RegionClients]]:
    """A dispatcher (not running: tests call its rounds) and its region clients."""
    addresses = {name: region.address for name, region in regions.items()}
    clients = RegionClients.for_topology(topology, addresses, "test-master")
    try:
        yield Dispatcher(ledger, clients, topology.master), clients
    finally:
        await clients.close()


async def submit(ledger: Ledger, count: int, **fields: Any) -> list[Run]:
    """``count`` tasks due now; their first runs."""
    runs = []
    for index in range(count):
        spec = TaskSpec(name=f"t{index}", command="true", **fields)
        _, run, _ = await ledger.submit_task(spec, datetime.now(UTC))
        assert run is not None
        runs.append(run)
    return runs


async def states(ledger: Ledger, runs: list[Run]) -> list[RunState]:
    """The current state of each run."""
    return [(await ledger.get_run(run.id)).state for run in runs]


async def test_each_region_gets_at_most_its_credit_in_one_delegate(ledger: Ledger) -> None:
    """One batch per region per round, never past the credit; the rest stays pending."""
    async with (
        fake_regions("eu", "us") as regions,
        dispatching(ledger, make_topology(), regions) as (dispatcher, _),
    ):
        regions["eu"].credit, regions["us"].credit = 2, 3
        for name in ("eu", "us"):
            await submit(ledger, 5, region=name, placement=Placement.STRICT)
        outcome = await dispatcher.dispatch_round()
        assert outcome.batches == {"eu": 2, "us": 3}
        assert [len(batch) for batch in regions["eu"].batches] == [2]
        assert [len(batch) for batch in regions["us"].batches] == [3]
        assert {run.region for run in regions["eu"].delegated} == {"eu"}
        assert outcome.full
        assert await ledger.count_pending() == 5


async def test_runs_without_a_region_fill_the_credit_left(ledger: Ledger) -> None:
    """Floating runs go where credit is; a full region gets none."""
    async with (
        fake_regions("eu", "us") as regions,
        dispatching(ledger, make_topology(), regions) as (dispatcher, _),
    ):
        regions["eu"].credit, regions["us"].credit = 4, 0
        await submit(ledger, 3)
        outcome = await dispatcher.dispatch_round()
        assert outcome.batches == {"eu": 3}
        assert regions["us"].batches == []


async def test_refused_runs_are_back_to_pending_when_the_round_ends(ledger: Ledger) -> None:
    """A refusal puts the run back at once, under the epoch it was claimed with."""
    async with (
        fake_regions("eu") as regions,
        dispatching(ledger, make_topology(("eu",)), regions) as (dispatcher, _),
    ):
        regions["eu"].refuse = lambda run: (
            region_pb2.REFUSAL_REASON_UNSUPPORTED if run.priority % 2 else 0
        )
        runs = [(await submit(ledger, 1, priority=p))[0] for p in range(4)]
        outcome = await dispatcher.dispatch_round()
        assert (outcome.claimed, outcome.accepted, outcome.released) == (4, 2, 2)
        assert outcome.bounced
        assert await states(ledger, runs) == [
            RunState.DELEGATED,
            RunState.PENDING,
            RunState.DELEGATED,
            RunState.PENDING,
        ]


async def test_a_region_short_of_credit_takes_part_of_a_batch(ledger: Ledger) -> None:
    """NO_CREDIT refusals go back to pending; the answered credit (0) is believed."""
    async with (
        fake_regions("eu") as regions,
        dispatching(ledger, make_topology(("eu",)), regions) as (dispatcher, clients),
    ):
        regions["eu"].credit = 5
        await dispatcher.dispatch_round()  # nothing due: learns credit 5 by a probe
        regions["eu"].credit = 2
        await submit(ledger, 5, region="eu", placement=Placement.STRICT)
        outcome = await dispatcher.dispatch_round()
        assert (outcome.claimed, outcome.accepted, outcome.released) == (5, 2, 3)
        assert not outcome.bounced
        assert clients.get("eu").credit == 0
        assert await ledger.count_pending() == 3


async def test_an_unavailable_region_opens_its_breaker_and_keeps_its_runs_pending(
    ledger: Ledger,
) -> None:
    """Retries stop once fail_max failures opened the breaker; then the region is skipped."""
    topology = make_topology(("eu",), fail_max=3, attempts=5)
    async with (
        fake_regions("eu", fail_with=grpc.StatusCode.UNAVAILABLE) as regions,
        dispatching(ledger, topology, regions) as (dispatcher, clients),
    ):
        runs = await submit(ledger, 3, region="eu", placement=Placement.STRICT)
        outcome = await dispatcher.dispatch_round()
        assert outcome.claimed == 3
        assert regions["eu"].failed_calls == 3
        assert clients.get("eu").breaker_state == "open"
        assert await states(ledger, runs) == [RunState.PENDING] * 3
        probes = regions["eu"].probes
        again = await dispatcher.dispatch_round()
        assert again.claimed == 0
        assert (regions["eu"].failed_calls, regions["eu"].probes) == (3, probes)
        assert await states(ledger, runs) == [RunState.PENDING] * 3


async def test_a_frozen_region_holds_up_no_delegation_to_the_others(ledger: Ledger) -> None:
    """eu takes a batch and never answers: us gets its runs round after round meanwhile."""
    async with (
        fake_regions("eu", "us") as regions,
        dispatching(ledger, make_topology(), regions) as (dispatcher, clients),
    ):
        eu, us = regions["eu"], regions["us"]
        eu.gate = asyncio.Event()
        frozen = await submit(ledger, 2, region="eu", placement=Placement.STRICT)
        await submit(ledger, 2, region="us", placement=Placement.STRICT)
        first = await dispatcher.dispatch_round()
        assert first.batches == {"eu": 2, "us": 2}
        assert (first.accepted, eu.waiting) == (2, 1)  # us answered; eu's call is still out
        later = await submit(ledger, 3, region="us", placement=Placement.STRICT)
        second = await dispatcher.dispatch_round()
        # eu, still busy with its first batch, gets nothing more; us gets its runs at once.
        assert (second.batches, second.accepted) == ({"us": 3}, 3)
        assert [run.run_id for run in us.delegated[2:]] == [run.id for run in later]
        assert (eu.incoming, eu.waiting) == (1, 1)  # the same first call, not a retry
        assert clients.get("eu").busy
        eu.gate.set()
        await dispatcher.settle()
        assert not clients.get("eu").busy
        assert await states(ledger, frozen) == [RunState.DELEGATED] * 2
        assert [run.run_id for run in eu.delegated] == [run.id for run in frozen]


async def test_a_transient_failure_is_retried_within_the_round(ledger: Ledger) -> None:
    """Two UNAVAILABLE answers, then success: the batch arrives in the same round."""
    async with (
        fake_regions("eu") as regions,
        dispatching(ledger, make_topology(("eu",)), regions) as (dispatcher, clients),
    ):
        await dispatcher.dispatch_round()  # learn the credit
        regions["eu"].fail_next = 2
        runs = await submit(ledger, 2)
        outcome = await dispatcher.dispatch_round()
        assert regions["eu"].failed_calls == 2
        assert outcome.accepted == 2
        assert clients.get("eu").breaker_state == "closed"
        assert await states(ledger, runs) == [RunState.DELEGATED] * 2


async def test_a_burst_drains_round_after_round_without_waiting(ledger: Ledger) -> None:
    """While claims come back full the next round starts at once, not after the interval."""
    topology = make_topology(("eu",), dispatch_interval=30)
    async with (
        fake_regions("eu", credit=10, constant_credit=True) as regions,
        dispatching(ledger, topology, regions) as (dispatcher, _),
    ):
        await submit(ledger, 35)
        running = asyncio.create_task(dispatcher.run())
        try:
            await eventually(lambda: len(regions["eu"].delegated) == 35, within=10)
            assert [len(batch) for batch in regions["eu"].batches] == [10, 10, 10, 5]
        finally:
            dispatcher.stop()
            await asyncio.wait_for(running, timeout=10)
        assert await ledger.count_pending() == 0


async def test_a_run_due_now_is_delegated_at_once_on_notify(ledger: Ledger) -> None:
    """With a 30 s interval, a submitted due-now run still reaches its region within 2 s."""
    topology = make_topology(("eu",), dispatch_interval=30)
    async with fake_regions("eu") as regions, running_master(topology, ledger, regions) as served:
        await eventually(lambda: regions["eu"].probes >= 1, within=10)
        await asyncio.sleep(0.2)  # the first rounds are over: the dispatcher waits on its timer
        async with grpc.aio.insecure_channel(served.grpc) as channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            spec = task_pb2.TaskSpec(name="now", command="true")
            submitted = await stub.Submit(scheduler_pb2.SubmitRequest(spec=spec))
            started = time.monotonic()
        await eventually(
            lambda: any(
                str(run.run_id) == submitted.first_run.id for run in regions["eu"].delegated
            ),
            within=2,
            interval=0.005,
        )
        assert time.monotonic() - started < 2


async def test_a_run_due_later_is_delegated_at_its_due_time_not_at_the_next_poll(
    ledger: Ledger,
) -> None:
    """With a 30 s interval, the dispatcher's timer follows the ledger: a run known before the
    master started (due in an hour) sets it, and a NOTIFY of a run due sooner lowers it."""
    topology = make_topology(("eu",), dispatch_interval=30)
    await submit(ledger, 1, schedule=AtSchedule(datetime.now(UTC) + timedelta(hours=1)))
    async with fake_regions("eu") as regions, running_master(topology, ledger, regions) as served:
        await eventually(lambda: regions["eu"].probes >= 1, within=10)
        await eventually(lambda: served.master.dispatcher.next_ready is not None, within=10)
        due = datetime.now(UTC) + timedelta(seconds=1)
        async with grpc.aio.insecure_channel(served.grpc) as channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            spec = task_spec_to_proto(TaskSpec("soon", "true", schedule=AtSchedule(due)))
            submitted = await stub.Submit(scheduler_pb2.SubmitRequest(spec=spec))
        await eventually(lambda: len(regions["eu"].delegated) == 1, within=15)
        run = await ledger.get_run(UUID(submitted.first_run.id))
    assert str(regions["eu"].delegated[0].run_id) == submitted.first_run.id
    assert run.delegated_at is not None
    assert run.delegated_at >= run.due_at  # never before it is due
    assert await ledger.count_pending() == 1  # the one due in an hour waits


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL])
async def test_an_unreachable_region_is_left_out_of_claims(
    ledger: Ledger, code: grpc.StatusCode
) -> None:
    """A region whose probe fails gets no runs; floating runs go to the healthy one."""
    async with (
        fake_regions("eu", "us") as regions,
        dispatching(ledger, make_topology(), regions) as (dispatcher, _),
    ):
        regions["us"].fail_with, regions["us"].fail_probes = code, True
        await submit(ledger, 3)
        outcome = await dispatcher.dispatch_round()
        assert outcome.batches == {"eu": 3}
        assert regions["us"].batches == []
