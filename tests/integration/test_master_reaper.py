"""The reaper: a region whose ledger heartbeat went stale gives its runs back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from test_master_harness import eventually, make_topology, running_master

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import Placement, RegionState, Run, RunState, TaskSpec
from taskmesh.master.reaper import Reaper
from taskmesh.master.region_clients import RegionClients

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def delegated_runs(ledger: Ledger, region: str, count: int, now: datetime) -> list[Run]:
    """``count`` strict runs of ``region``, claimed for it by the ledger at ``now``."""
    for index in range(count):
        spec = TaskSpec(name=f"t{index}", command="true", region=region, placement=Placement.STRICT)
        await ledger.submit_task(spec, now)
    claimed = await ledger.claim_due_runs({region: count}, now)
    assert len(claimed) == count
    return [await ledger.get_run(run.run_id) for run in claimed]


async def test_reap_once_requeues_a_stale_regions_runs(ledger: Ledger) -> None:
    """Past the heartbeat timeout the region's delegated runs are pending again."""
    topology = make_topology(("eu", "us"), heartbeat_timeout=10)
    await ledger.heartbeat_region("eu", "127.0.0.1:1", 10, T0)
    await ledger.heartbeat_region("us", "127.0.0.1:2", 10, T0 + timedelta(seconds=9))
    runs = await delegated_runs(ledger, "eu", 2, T0)
    clients = RegionClients.for_topology(topology, {}, "test-master")
    try:
        reaper = Reaper(ledger, clients, topology, clock=lambda: T0 + timedelta(seconds=11))
        (result,) = await reaper.reap_once()
        assert result.region == "eu"
        assert sorted(run.id for run in result.requeued) == sorted(run.id for run in runs)
        for run in runs:
            now = await ledger.get_run(run.id)
            assert now.state is RunState.PENDING
            assert now.epoch > run.epoch
        regions = {region.name: region.state for region in await ledger.list_regions()}
        assert regions == {"eu": RegionState.DOWN, "us": RegionState.UP}
        assert await reaper.reap_once() == []  # a region is reaped once
    finally:
        await clients.close()


async def test_a_new_holder_of_the_duty_waits_one_timeout_before_reaping(ledger: Ledger) -> None:
    """After taking the duty (start, takeover, ledger back) stale heartbeats get one timeout."""
    topology = make_topology(("eu",), heartbeat_timeout=0.5)
    await ledger.heartbeat_region("eu", "127.0.0.1:1", 10, T0)
    clients = RegionClients.for_topology(topology, {}, "test-master")
    try:
        reaper = Reaper(ledger, clients, topology, clock=lambda: T0 + timedelta(seconds=11))
        reaper.on_acquired()
        assert await reaper.run_pass() == []
        await asyncio.sleep(0.6)
        (result,) = await reaper.run_pass()
        assert result.region == "eu"
    finally:
        await clients.close()


async def test_a_running_master_reaps_and_keeps_runs_pending_without_a_region(
    ledger: Ledger,
) -> None:
    """The reaper runs in the master; with no reachable region the runs stay pending."""
    topology = make_topology(("eu",), heartbeat_timeout=0.5)
    now = datetime.now(UTC)
    await ledger.heartbeat_region("eu", "127.0.0.1:1", 10, now - timedelta(seconds=5))
    runs = await delegated_runs(ledger, "eu", 3, now - timedelta(seconds=5))

    async def all_pending() -> bool:
        found = [await ledger.get_run(run.id) for run in runs]
        return all(run.state is RunState.PENDING for run in found)

    async with running_master(topology, ledger):
        await eventually(all_pending, within=10)
        await asyncio.sleep(0.5)  # several dispatch rounds: nobody can take them
        assert await all_pending()
