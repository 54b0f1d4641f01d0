"""Claiming due runs: credit per region, order, placement, SKIP LOCKED, release."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from taskmesh.common.ledger import Ledger
from taskmesh.common.ledger.engine import asyncpg_url
from taskmesh.common.model import (
    AtSchedule,
    Executor,
    Placement,
    RunState,
    TransitionRefusal,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the clock of conftest.Scenario


async def test_claim_respects_each_regions_credit(ledger: Ledger, scenario) -> None:
    """No region gets more runs than its credit; a region with no credit gets none."""
    for region in ("r1", "r2", "r3"):
        for _ in range(4):
            await scenario.submit(region=region)
    claimed = await ledger.claim_due_runs({"r1": 2, "r2": 5, "r3": 0}, NOW)
    per_region = {region: sum(c.region == region for c in claimed) for region in ("r1", "r2", "r3")}
    assert per_region == {"r1": 2, "r2": 4, "r3": 0}
    assert await ledger.count_pending() == 6


async def test_claim_moves_runs_to_delegated_with_a_new_epoch(ledger: Ledger, scenario) -> None:
    """A claimed run is delegated in its region with epoch + 1, and the event is logged."""
    task, run = await scenario.submit(
        region="r1",
        command="echo",
        executor=Executor.EXEC,
        args=("a", "b"),
        kind="io",
        timeout=timedelta(seconds=9),
        labels={"team": "x"},
    )
    (claimed,) = await ledger.claim_due_runs({"r1": 1}, NOW)
    assert (claimed.run_id, claimed.task_id, claimed.epoch, claimed.region) == (
        run.id,
        task.id,
        run.epoch + 1,
        "r1",
    )
    assert (claimed.command, claimed.executor, claimed.args, claimed.kind) == (
        "echo",
        Executor.EXEC,
        ("a", "b"),
        "io",
    )
    assert (claimed.timeout, claimed.labels, claimed.attempt) == (
        timedelta(seconds=9),
        {"team": "x"},
        1,
    )
    stored = await ledger.get_run(run.id)
    assert (stored.state, stored.epoch, stored.delegated_at) == (RunState.DELEGATED, 1, NOW)
    event = (await ledger.events_after(0))[-1]
    assert (event.from_state, event.to_state, event.epoch, event.region) == (
        RunState.PENDING,
        RunState.DELEGATED,
        1,
        "r1",
    )
    assert await ledger.claim_due_runs({"r1": 5}, NOW) == []


async def test_claim_takes_highest_priority_then_oldest_due(ledger: Ledger, scenario) -> None:
    """Within a region's credit the best runs win: priority first, then due time."""
    runs = {}
    for name, priority, due_minutes_ago in [
        ("low", -5, 30),
        ("old", 3, 20),
        ("new", 3, 10),
        ("top", 9, 1),
        ("mid", 0, 40),
    ]:
        schedule = AtSchedule(NOW - timedelta(minutes=due_minutes_ago))
        _, run = await scenario.submit(name=name, priority=priority, region="r1", schedule=schedule)
        runs[run.id] = name
    claimed = await ledger.claim_due_runs({"r1": 3}, NOW)
    assert [runs[c.run_id] for c in claimed] == ["top", "old", "new"]


async def test_runs_not_yet_ready_are_not_claimed(ledger: Ledger, scenario) -> None:
    """A run due in the future waits until its time."""
    _, run = await scenario.submit(schedule=AtSchedule(NOW + timedelta(minutes=5)))
    assert await ledger.claim_due_runs({"r1": 10}, NOW) == []
    later = await ledger.claim_due_runs({"r1": 10}, NOW + timedelta(minutes=5))
    assert [c.run_id for c in later] == [run.id]


async def test_regionless_runs_go_to_the_most_free_capacity(ledger: Ledger, scenario) -> None:
    """Runs with no region fill leftover credit, the region with most free room first."""
    for _ in range(6):
        await scenario.submit()
    claimed = await ledger.claim_due_runs({"r1": 1, "r2": 3, "r3": 0}, NOW)
    assert [c.region for c in claimed].count("r2") == 3
    assert [c.region for c in claimed].count("r1") == 1
    assert len(claimed) == 4


async def test_bound_runs_take_credit_before_regionless_ones(ledger: Ledger, scenario) -> None:
    """A region's own runs come first; only the credit left over takes floating runs."""
    _, floating = await scenario.submit(priority=100)
    _, bound = await scenario.submit(region="r1", priority=-100)
    (claimed,) = await ledger.claim_due_runs({"r1": 1}, NOW)
    assert claimed.run_id == bound.id
    (claimed,) = await ledger.claim_due_runs({"r1": 1}, NOW)
    assert claimed.run_id == floating.id


async def test_preferred_region_absent_from_credits_spills_over(ledger: Ledger, scenario) -> None:
    """A 'prefer' run whose region takes no work now goes to its first fallback with credit,
    recorded as spilled from its region; a 'strict' one waits; without fallbacks none spill."""
    _, prefer = await scenario.submit(region="gone", placement=Placement.PREFER)
    _, strict = await scenario.submit(region="gone", placement=Placement.STRICT)
    assert await ledger.claim_due_runs({"r1": 5, "r2": 5}, NOW) == []
    fallbacks = {"gone": ["r3", "r2", "r1"]}
    claimed = await ledger.claim_due_runs({"r1": 5, "r2": 5, "r3": 0}, NOW, fallbacks)
    assert [(c.run_id, c.region) for c in claimed] == [(prefer.id, "r2")]
    assert (await ledger.get_run(strict.id)).state is RunState.PENDING
    assert await ledger.spillover_counts(NOW - timedelta(minutes=1)) == {("gone", "r2"): 1}
    claimed = await ledger.claim_due_runs({"gone": 5}, NOW, fallbacks)
    assert [(c.run_id, c.region) for c in claimed] == [(strict.id, "gone")]


async def test_a_full_region_keeps_its_runs(ledger: Ledger, scenario) -> None:
    """A region present with zero credit is healthy but full: its runs do not spill."""
    await scenario.submit(region="r2")
    assert await ledger.claim_due_runs({"r1": 5, "r2": 0}, NOW) == []


async def test_locked_runs_are_skipped_not_waited_for(
    ledger: Ledger, scenario, database_url: str
) -> None:
    """Runs locked by another transaction are skipped at once, and claimable afterwards."""
    submitted = [(await scenario.submit(region="r1"))[1] for _ in range(6)]
    held = sorted(run.id for run in submitted[:2])
    engine = create_async_engine(asyncpg_url(database_url))
    try:
        async with engine.connect() as other:
            lock = text("SELECT id FROM runs WHERE id = ANY(:ids) FOR UPDATE")
            await other.execute(lock, {"ids": held})
            first = await asyncio.wait_for(ledger.claim_due_runs({"r1": 10}, NOW), timeout=5)
            assert {c.run_id for c in first} == {run.id for run in submitted[2:]}
            await other.rollback()
    finally:
        await engine.dispose()
    second = await ledger.claim_due_runs({"r1": 10}, NOW)
    assert sorted(c.run_id for c in second) == held


async def test_concurrent_claimers_never_share_a_run(
    ledger: Ledger, scenario, database_url: str
) -> None:
    """Two masters claiming at once get disjoint runs; none is lost or delegated twice."""
    for _ in range(40):
        await scenario.submit()
    async with await Ledger.connect(database_url) as other:
        rounds = [
            await asyncio.gather(
                ledger.claim_due_runs({"r1": 7}, NOW), other.claim_due_runs({"r2": 7}, NOW)
            )
            for _ in range(4)
        ]
    claimed = [c.run_id for pair in rounds for batch in pair for c in batch]
    assert len(claimed) == len(set(claimed)) == 40
    events = [e for e in await ledger.events_after(0) if e.to_state is RunState.DELEGATED]
    assert len(events) == 40


async def test_release_puts_refused_runs_back(ledger: Ledger, scenario) -> None:
    """Runs a region refused go back to pending, placed afresh; a stale release is refused."""
    delegated = await scenario.delegated()
    bound = await scenario.delegated(region="r1")
    outcomes = await ledger.release_runs(
        [(delegated.id, delegated.epoch), (bound.id, bound.epoch), (bound.id, bound.epoch + 5)],
        NOW,
    )
    assert [o.refusal for o in outcomes] == [None, None, TransitionRefusal.STALE_EPOCH]
    released = await ledger.get_run(delegated.id)
    assert (released.state, released.region, released.epoch) == (RunState.PENDING, None, 1)
    assert (await ledger.get_run(bound.id)).region == "r1"
    event = (await ledger.events_after(0))[-1]
    assert event.detail == {"cause": "released"}
    reclaimed = await ledger.claim_due_runs({"r1": 0, "r2": 5}, NOW)
    assert {c.run_id: c.epoch for c in reclaimed} == {delegated.id: 2}


async def test_delegated_before_streams_only_what_the_caller_keeps(
    ledger: Ledger, scenario
) -> None:
    """A region's audit gets its old delegations, filtered as they stream in."""
    for _ in range(5):
        await scenario.submit(region="r1")
    await scenario.submit(region="r2")
    claimed = await ledger.claim_due_runs({"r1": 5, "r2": 1}, NOW)
    mine = {(c.run_id, c.epoch) for c in claimed if c.region == "r1"}
    later = NOW + timedelta(seconds=1)
    assert set(await ledger.delegated_before("r1", later)) == mine
    assert await ledger.delegated_before("r1", NOW) == []  # delegated at NOW, not before
    held = set(list(mine)[:3])
    kept = await ledger.delegated_before("r1", later, lambda r, e: (r, e) not in held)
    assert set(kept) == mine - held
