"""Fixtures for ledger tests: a connected ``Ledger`` on a fresh database, and a scenario helper.

The clock is fixed (``NOW``) and retry jitter is pinned at 0.5 (backoffs are ¾ of nominal),
so every timestamp and backoff a test sees is exact. Test modules repeat ``NOW`` rather than
import it: two ``conftest`` modules cannot both be imported by that name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_master_harness import make_topology

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import (
    ClaimedRun,
    Run,
    RunState,
    Task,
    TaskSpec,
    Transition,
)
from taskmesh.master.region_clients import RegionClients

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=30)
JITTER = 0.5


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    """A ledger on this test's own migrated database, with pinned jitter."""
    connected = await Ledger.connect(database_url, pool_size=4, jitter=lambda: JITTER)
    try:
        yield connected
    finally:
        await connected.close()


class Scenario:
    """Builds runs in any state through the ledger's own operations."""

    def __init__(self, ledger: Ledger) -> None:
        """Build on ``ledger``."""
        self.ledger = ledger
        self.names = 0

    async def submit(self, **fields: Any) -> tuple[Task, Run]:
        """Submit a task (name and command defaulted) that gets a first run."""
        self.names += 1
        fields.setdefault("name", f"task-{self.names}")
        fields.setdefault("command", "true")
        task, run, created = await self.ledger.submit_task(TaskSpec(**fields), NOW)
        assert created
        assert run is not None
        return task, run

    async def claim(self, credits: Mapping[str, int] | None = None) -> list[ClaimedRun]:
        """Claim at ``NOW`` with generous credit in region r1 by default."""
        return await self.ledger.claim_due_runs(credits or {"r1": 1000}, NOW)

    async def delegated(self, **fields: Any) -> Run:
        """A run of a new task, claimed into region r1."""
        _, run = await self.submit(**fields)
        claimed = {item.run_id for item in await self.claim()}
        assert run.id in claimed
        return await self.ledger.get_run(run.id)

    async def move(self, run: Run, *targets: RunState, **options: Any) -> Run:
        """Apply transitions one at a time, each with the run's current epoch."""
        for target in targets:
            transition = Transition(run.id, run.epoch, target, NOW, worker_id="w1")
            (outcome,) = await self.ledger.record_transitions([transition], **options)
            assert outcome.applied, (run.state, target, outcome.refusal)
            assert outcome.run is not None
            run = outcome.run
        return run

    async def blocked(self) -> tuple[Run, Run]:
        """A blocked run and the pending run of the task it waits for."""
        _, upstream = await self.submit()
        _, run = await self.submit(dependencies=(upstream.task_id,))
        assert run.state is RunState.BLOCKED
        return run, upstream

    async def run_in(self, state: RunState) -> Run:
        """A run brought into ``state`` along legal transitions."""
        paths = {
            RunState.ASSIGNED: (RunState.ASSIGNED,),
            RunState.RUNNING: (RunState.ASSIGNED, RunState.RUNNING),
            RunState.SUCCEEDED: (RunState.ASSIGNED, RunState.RUNNING, RunState.SUCCEEDED),
            RunState.FAILED: (RunState.ASSIGNED, RunState.RUNNING, RunState.FAILED),
            RunState.TIMED_OUT: (RunState.ASSIGNED, RunState.RUNNING, RunState.TIMED_OUT),
            RunState.LOST: (RunState.ASSIGNED, RunState.RUNNING, RunState.LOST),
        }
        if state is RunState.BLOCKED:
            return (await self.blocked())[0]
        if state is RunState.UPSTREAM_FAILED:
            return await self.move((await self.blocked())[0], state)
        if state is RunState.PENDING:
            return (await self.submit())[1]
        if state is RunState.CANCELLED:
            return await self.move((await self.submit())[1], state)
        run = await self.delegated()
        return await self.move(run, *paths.get(state, ()), lost_retry_limit=0)


@pytest.fixture
def scenario(ledger: Ledger) -> Scenario:
    """A scenario builder on the test's ledger."""
    return Scenario(ledger)


@pytest.fixture
async def clients() -> AsyncIterator[RegionClients]:
    """Master-side region clients of a topology with no reachable region (eu)."""

    regions = RegionClients.for_topology(make_topology(("eu",)), {}, "test-master")
    yield regions
    await regions.close()
