"""The invariant checker: reads the ledger (and the commands' execution log) after a scenario.

It checks, for the tasks a scenario submitted:

- every task ends with exactly one terminal latest attempt, and no run is lost (a task whose
  latest attempt did not succeed, or that has no attempt at all, counts as lost);
- every attempt's event log is one chain (each event starts where the previous one ended) and
  reaches a terminal state at most once;
- no write was applied under a stale epoch: only a (re)delegation or a return to pending may
  move an attempt's epoch; every other event carries the epoch of the event before it;
- no successful task was executed more often than once plus the number of its ``lost``
  attempts (a lost attempt may have run to its end on a worker nobody could hear anymore).

Commands record each execution by appending their task's token to the execution log.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import asyncpg

TERMINAL = frozenset({"succeeded", "failed", "timed_out", "cancelled", "upstream_failed", "lost"})
EPOCH_MOVERS = frozenset({"delegated", "pending"})

RUNS = """
    SELECT id, task_id, attempt, state FROM runs WHERE task_id = ANY($1::uuid[])
"""
EVENTS = """
    SELECT id, run_id, from_state, to_state, epoch FROM run_events
    WHERE task_id = ANY($1::uuid[]) ORDER BY run_id, id
"""


@dataclass
class Report:
    """What the checker found for one scenario."""

    submitted: int = 0
    completed: int = 0
    unfinished: int = 0  # latest attempt not terminal (yet)
    lost: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    stale_writes: list[str] = field(default_factory=list)
    broken_chains: list[str] = field(default_factory=list)
    lost_attempts: int = 0  # attempts recorded lost (each retried as a new attempt)
    executions: int = 0

    @property
    def violations(self) -> list[str]:
        """Everything that breaks an invariant."""
        return [*self.lost, *self.duplicates, *self.stale_writes, *self.broken_chains]


class InvariantChecker:
    """Checks the invariants over the ledger at ``database_url``."""

    def __init__(self, database_url: str, execution_log: Path) -> None:
        self._url = database_url
        self.execution_log = execution_log

    def executions(self) -> Counter[str]:
        """How many times each token's command ran."""
        if not self.execution_log.exists():
            return Counter()
        return Counter(self.execution_log.read_text().split())

    def unfinished(self, task_ids: list[UUID]) -> int:
        """Tasks whose latest attempt is not terminal, or that have no attempt."""
        runs = asyncio.run(self._fetch(RUNS, task_ids))
        latest = _latest_states(runs)
        return sum(1 for task in task_ids if latest.get(task) not in TERMINAL)

    def attempt_states(self, task_ids: list[UUID]) -> Counter[str]:
        """How many attempts of these tasks are in each state (retries are attempts too)."""
        runs = asyncio.run(self._fetch(RUNS, task_ids))
        return Counter(row["state"] for row in runs)

    def check(self, tokens: dict[UUID, str]) -> Report:
        """Check every invariant for the tasks in ``tokens`` (task id → execution token)."""
        task_ids = list(tokens)
        runs, events = asyncio.run(self._fetch_both(task_ids))
        report = Report(submitted=len(task_ids))
        latest = _latest_states(runs)
        lost_attempts = Counter(row["task_id"] for row in runs if row["state"] == "lost")
        report.lost_attempts = sum(lost_attempts.values())
        executions = self.executions()
        for task_id, token in tokens.items():
            state = latest.get(task_id)
            ran = executions.get(token, 0)
            report.executions += ran
            if state == "succeeded":
                report.completed += 1
            elif state not in TERMINAL:
                report.unfinished += 1
                report.lost.append(f"task {task_id}: latest attempt is {state}, not finished")
            else:
                report.lost.append(f"task {task_id}: ended {state}")
            if ran > 1 + lost_attempts[task_id]:
                report.duplicates.append(
                    f"task {task_id}: executed {ran} times with "
                    f"{lost_attempts[task_id]} lost attempts"
                )
            if state == "succeeded" and ran == 0:
                report.lost.append(f"task {task_id}: succeeded but its command never ran")
        _check_events(events, report)
        return report

    async def _fetch_both(
        self, task_ids: list[UUID]
    ) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
        connection = await asyncpg.connect(self._url)
        try:
            runs = await connection.fetch(RUNS, task_ids)
            events = await connection.fetch(EVENTS, task_ids)
        finally:
            await connection.close()
        return runs, events

    async def _fetch(self, query: str, task_ids: list[UUID]) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(self._url)
        try:
            return list(await connection.fetch(query, task_ids))
        finally:
            await connection.close()


def _latest_states(runs: list[asyncpg.Record]) -> dict[UUID, str]:
    """Each task's latest attempt's state."""
    best: dict[UUID, tuple[int, str]] = {}
    for row in runs:
        current = best.get(row["task_id"])
        if current is None or row["attempt"] > current[0]:
            best[row["task_id"]] = (row["attempt"], row["state"])
    return {task_id: state for task_id, (_, state) in best.items()}


def _check_events(events: list[asyncpg.Record], report: Report) -> None:
    """The chain, single-terminal and epoch checks over every attempt's event log."""
    by_run: dict[UUID, list[asyncpg.Record]] = defaultdict(list)
    for event in events:
        by_run[event["run_id"]].append(event)
    for run_id, chain in by_run.items():
        terminals = 0
        for previous, event in zip([None, *chain], chain, strict=False):
            terminals += event["to_state"] in TERMINAL
            if previous is None:
                continue
            if event["from_state"] != previous["to_state"]:
                report.broken_chains.append(
                    f"run {run_id}: event {event['id']} from {event['from_state']} "
                    f"after {previous['to_state']}"
                )
            moves_epoch = event["to_state"] in EPOCH_MOVERS
            if event["epoch"] != previous["epoch"] and not moves_epoch:
                report.stale_writes.append(
                    f"run {run_id}: {event['to_state']} applied at epoch {event['epoch']} "
                    f"while the run was at epoch {previous['epoch']}"
                )
        if terminals > 1:
            report.broken_chains.append(f"run {run_id}: {terminals} terminal events")
