"""Fencing: a region's write under an epoch the run has moved past changes nothing, is counted.

The region's ledger writer against a real ledger: a run delegated to r1 is reaped (r1 stopped
heartbeating) and re-delegated to r2; r1's late writes, under the old epoch, are refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import RunState, Transition, TransitionRefusal
from taskmesh.region.ledger_writer import LedgerWriter

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=30)


@pytest.fixture
async def writer(ledger: Ledger) -> AsyncIterator[LedgerWriter]:
    running = LedgerWriter(ledger, lost_retry_limit=3)
    task = asyncio.create_task(running.run())
    yield running
    running.stop()
    await asyncio.wait_for(task, 10)


async def test_a_stale_write_changes_nothing_and_is_counted(
    ledger: Ledger, scenario, writer: LedgerWriter
) -> None:
    """Every target a region might write under the old epoch is refused, and counted."""
    await ledger.heartbeat_region("r1", "10.0.0.1:7000", 5, NOW)
    old = await scenario.delegated()
    await ledger.reap_region("r1", LATER)
    (claimed,) = await ledger.claim_due_runs({"r2": 5}, LATER)
    assert claimed.run_id == old.id
    assert claimed.epoch > old.epoch

    late = [
        Transition(old.id, old.epoch, target, LATER, worker_id="w1")
        for target in (RunState.ASSIGNED, RunState.RUNNING, RunState.SUCCEEDED)
    ]
    outcomes = await writer.write(late)

    assert [outcome.refusal for outcome in outcomes] == [TransitionRefusal.STALE_EPOCH] * 3
    assert writer.stale_refusals == 3
    current = await ledger.get_run(old.id)
    assert (current.state, current.region, current.epoch) == (
        RunState.DELEGATED,
        "r2",
        claimed.epoch,
    )
    current_write = Transition(old.id, claimed.epoch, RunState.ASSIGNED, LATER, worker_id="w2")
    (applied,) = await writer.write([current_write])
    assert applied.applied
    assert writer.stale_refusals == 3
