"""Regions and workers in the ledger; the event log; singleton duties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import EventFilter, RegionState, RunState, WorkerState

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the clock of conftest.Scenario


async def test_region_heartbeat_upserts(ledger: Ledger) -> None:
    """The first heartbeat registers a region, later ones refresh address, credit and time."""
    first = await ledger.heartbeat_region("eu", "10.0.0.1:7000", 10, NOW)
    assert (first.name, first.address, first.credit, first.state) == (
        "eu",
        "10.0.0.1:7000",
        10,
        RegionState.UP,
    )
    later = NOW + timedelta(seconds=5)
    second = await ledger.heartbeat_region(
        "eu", "10.0.0.9:7000", 3, later, state=RegionState.DRAINING
    )
    assert (second.address, second.credit, second.heartbeat_at, second.state) == (
        "10.0.0.9:7000",
        3,
        later,
        RegionState.DRAINING,
    )
    assert await ledger.list_regions() == [second]


async def test_stale_regions_are_those_silent_too_long(ledger: Ledger) -> None:
    """Only regions whose heartbeat is older than the timeout are stale."""
    await ledger.heartbeat_region("old", "a", 1, NOW - timedelta(minutes=1))
    await ledger.heartbeat_region("fresh", "b", 1, NOW)
    stale = await ledger.stale_regions(NOW, timedelta(seconds=30))
    assert [region.name for region in stale] == ["old"]


async def test_workers_register_heartbeat_and_leave(ledger: Ledger) -> None:
    """Workers upsert, heartbeat in batches (unknown ids reported), change state, leave."""
    worker = await ledger.upsert_worker("w1", "eu", 4, NOW, labels={"gpu": "yes"})
    assert (worker.id, worker.region, worker.slots, worker.labels, worker.state) == (
        "w1",
        "eu",
        4,
        {"gpu": "yes"},
        WorkerState.UP,
    )
    await ledger.upsert_worker("w2", "us", 2, NOW)
    later = NOW + timedelta(seconds=3)
    assert await ledger.heartbeat_workers(["w1", "w2", "ghost"], later) == {"ghost"}
    assert [w.heartbeat_at for w in await ledger.list_workers()] == [later, later]
    assert [w.id for w in await ledger.list_workers("eu")] == ["w1"]
    assert await ledger.set_worker_state("w1", WorkerState.DRAINING)
    assert (await ledger.list_workers("eu"))[0].state is WorkerState.DRAINING
    moved = await ledger.upsert_worker("w1", "us", 8, later)
    assert (moved.region, moved.slots, moved.state) == ("us", 8, WorkerState.UP)
    assert await ledger.remove_worker("w1")
    assert not await ledger.remove_worker("w1")
    assert not await ledger.set_worker_state("w1", WorkerState.DOWN)
    assert [w.id for w in await ledger.list_workers()] == ["w2"]


async def test_events_after_pages_and_filters(ledger: Ledger, scenario) -> None:
    """The event log reads forward from an id, in order, with filters and a limit."""
    _, first = await scenario.submit()
    _, second = await scenario.submit(region="r2")
    await ledger.claim_due_runs({"r1": 10, "r2": 10}, NOW)
    events = await ledger.events_after(0)
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert len(events) == 4
    assert await ledger.events_after(events[1].id, limit=1) == [events[2]]
    mine = await ledger.events_after(0, filters=EventFilter(task_id=first.task_id))
    assert {e.run_id for e in mine} == {first.id}
    by_run = await ledger.events_after(0, filters=EventFilter(run_id=second.id))
    assert [e.to_state for e in by_run] == [RunState.PENDING, RunState.DELEGATED]
    in_r2 = await ledger.events_after(0, filters=EventFilter(region="r2"))
    assert [e.run_id for e in in_r2] == [second.id, second.id]
    delegations = await ledger.events_after(
        0, filters=EventFilter(states=frozenset({RunState.DELEGATED}))
    )
    assert {e.run_id for e in delegations} == {first.id, second.id}


async def test_singleton_duty_is_held_by_one_process(ledger: Ledger, database_url: str) -> None:
    """Two masters try the same duty: one holds it until it lets go, then the other can."""
    async with await Ledger.connect(database_url) as standby:
        async with ledger.singleton("reaper") as leader:
            assert leader.held
            async with standby.singleton("reaper") as follower:
                assert not follower.held
            async with standby.singleton("materialiser") as other_duty:
                assert other_duty.held
        async with standby.singleton("reaper") as successor:
            assert successor.held
            assert not successor.lost.is_set()
