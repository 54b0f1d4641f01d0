"""Recording state transitions in batches, with their consequences in the same transaction.

A batch is judged in order against the attempts as locked: a refused transition changes
nothing and says why. Several transitions of one attempt in one batch (``running`` then
``succeeded``) are written in successive rounds of the same guarded statement. Then, still in
the transaction, ``settle`` creates retries, unblocks dependents of successes and fails the
dependents of terminal failures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from taskmesh.common.ledger import dependencies, retries
from taskmesh.common.ledger.changes import Change, Locked, lock_ids, notify_ready, write_changes
from taskmesh.common.ledger.creation import insert_runs
from taskmesh.common.ledger.schema import ERROR_LIMIT, OUTPUT_TAIL_LIMIT
from taskmesh.common.model import (
    Run,
    RunState,
    Transition,
    TransitionOutcome,
    TransitionRefusal,
    is_legal_transition,
)


def refusal(run: Run, transition: Transition) -> TransitionRefusal | None:
    """Why ``transition`` may not be applied to ``run`` as it is now, or None."""
    if run.epoch != transition.epoch:
        return TransitionRefusal.STALE_EPOCH
    if run.state is transition.target:
        return TransitionRefusal.DUPLICATE
    if not is_legal_transition(run.state, transition.target):
        return TransitionRefusal.ILLEGAL_STATE
    return None


def moved(locked: Locked, run: Run, transition: Transition) -> Run:
    """``run`` after ``transition``: the state and the columns that go with it."""
    target, at = transition.target, transition.at
    worker_id = transition.worker_id or run.worker_id
    if target is RunState.ASSIGNED:
        return replace(run, state=target, assigned_at=at, worker_id=worker_id)
    if target is RunState.RUNNING:
        return replace(run, state=target, started_at=at, worker_id=worker_id)
    if target is RunState.DELEGATED:  # back in its region's queue, off the worker
        return replace(run, state=target, worker_id=None)
    if target is RunState.PENDING:  # back to the master: placed afresh by its task's affinity
        return replace(run, state=target, worker_id=None, region=locked.task_region)
    return replace(
        run,
        state=target,
        finished_at=at,
        worker_id=worker_id,
        exit_code=run.exit_code if transition.exit_code is None else transition.exit_code,
        output_tail=(transition.output_tail or run.output_tail)[-OUTPUT_TAIL_LIMIT:],
        error=(transition.error or run.error)[:ERROR_LIMIT],
    )


@dataclass(slots=True)
class Plan:
    """A judged batch: one outcome slot per transition, changes in rounds of distinct runs."""

    outcomes: list[TransitionOutcome] = field(default_factory=list)
    rounds: list[list[tuple[int, Change]]] = field(default_factory=list)


def plan(
    transitions: Sequence[Transition],
    locked: Mapping[UUID, Locked],
    detail: Mapping[str, object],
) -> Plan:
    """Judge each transition in order against the attempts as they will be by then."""
    result = Plan()
    current = {run_id: item.run for run_id, item in locked.items()}
    writes = dict.fromkeys(locked, 0)
    for index, transition in enumerate(transitions):
        run = current.get(transition.run_id)
        if run is None:
            result.outcomes.append(TransitionOutcome(transition, TransitionRefusal.UNKNOWN_RUN))
            continue
        reason = refusal(run, transition)
        result.outcomes.append(TransitionOutcome(transition, reason, run.state, run.epoch))
        if reason is not None:
            continue
        item = replace(locked[run.id], run=run)
        after = moved(item, run, transition)
        round_index, writes[run.id] = writes[run.id], writes[run.id] + 1
        if round_index == len(result.rounds):
            result.rounds.append([])
        result.rounds[round_index].append((index, Change(item, after, transition.at, detail)))
        current[run.id] = after
    return result


async def apply(
    connection: AsyncConnection, rounds: Sequence[Sequence[Change]]
) -> list[dict[UUID, Run]]:
    """Write rounds of changes in order; returns the written attempts of each round by id."""
    written: list[dict[UUID, Run]] = []
    for changes in rounds:
        runs = await write_changes(connection, changes)
        if len(runs) != len(changes):  # the rows are locked: this is a planning bug
            raise RuntimeError("a planned transition was refused by the ledger's guard")
        written.append({run.id: run for run in runs})
    return written


@dataclass(slots=True)
class Settlement:
    """What ``settle`` did beyond the transitions themselves."""

    retries: dict[UUID, Run] = field(default_factory=dict)  # ended attempt id → next attempt
    unblocked: list[Run] = field(default_factory=list)
    upstream_failed: list[Run] = field(default_factory=list)


async def settle(
    connection: AsyncConnection,
    ended: Sequence[tuple[Locked, Run]],
    jitter: retries.Jitter,
    lost_retry_limit: int,
) -> Settlement:
    """Retry, unblock dependents and fail dependents for attempts that just ended."""
    settlement = Settlement()
    if not ended:
        return settlement
    at = max(run.finished_at or run.created_at for _, run in ended)
    retried = [
        (item, run) for item, run in ended if retries.is_retried(item, run, lost_retry_limit)
    ]
    new_runs = await insert_runs(
        connection, [retries.next_attempt(item, run, jitter) for item, run in retried]
    )
    by_key = {(run.task_id, run.due_at, run.attempt): run for run in new_runs}
    for _, run in retried:
        settlement.retries[run.id] = by_key[(run.task_id, run.due_at, run.attempt + 1)]
    succeeded = {run.task_id for _, run in ended if run.state is RunState.SUCCEEDED}
    failed = {
        run.task_id
        for _, run in ended
        if run.state is not RunState.SUCCEEDED and run.id not in settlement.retries
    }
    await dependencies.lock_finished_tasks(connection, succeeded | failed)
    settlement.unblocked = await dependencies.unblock_dependents(connection, succeeded, at)
    settlement.upstream_failed = await dependencies.fail_descendants(connection, failed, at)
    return settlement


def _ended(locked: Mapping[UUID, Locked], written: Iterable[Run]) -> list[tuple[Locked, Run]]:
    """The written attempts that reached a terminal state, with their lock records."""
    return [(locked[run.id], run) for run in written if run.state.is_terminal]


async def notify_if_due(connection: AsyncConnection, runs: Sequence[Run], at: datetime) -> None:
    """NOTIFY dispatchers when any of ``runs`` is pending: claimable at ``at`` or later."""
    pending = [run.ready_at or run.due_at for run in runs if run.state is RunState.PENDING]
    await notify_ready(connection, pending, at)


async def record(
    connection: AsyncConnection,
    transitions: Sequence[Transition],
    jitter: retries.Jitter,
    lost_retry_limit: int,
    detail: Mapping[str, object] | None = None,
) -> list[TransitionOutcome]:
    """Lock, judge, write and settle a batch of transitions."""
    if not transitions:
        return []
    locked = await lock_ids(connection, [transition.run_id for transition in transitions])
    judged = plan(transitions, locked, detail or {})
    written = await apply(connection, [[change for _, change in r] for r in judged.rounds])
    final = {run_id: run for round_runs in written for run_id, run in round_runs.items()}
    settlement = await settle(connection, _ended(locked, final.values()), jitter, lost_retry_limit)
    at = max(transition.at for transition in transitions)
    woken = [*final.values(), *settlement.retries.values(), *settlement.unblocked]
    await notify_if_due(connection, woken, at)
    return _outcomes(judged, written, settlement)


def _outcomes(
    judged: Plan, written: Sequence[Mapping[UUID, Run]], settlement: Settlement
) -> list[TransitionOutcome]:
    """Fill the applied outcomes with the attempts as written and any retry they caused."""
    outcomes = list(judged.outcomes)
    for round_changes, round_runs in zip(judged.rounds, written, strict=True):
        for index, change in round_changes:
            run = round_runs[change.after.id]
            outcomes[index] = replace(
                outcomes[index],
                current_state=run.state,
                current_epoch=run.epoch,
                run=run,
                next_attempt=settlement.retries.get(run.id) if run.state.is_terminal else None,
            )
    return outcomes
