"""Recording state transitions in batches, with their consequences in the same transaction.

A batch is judged in order against the attempts as locked: a refused transition changes
nothing and says why. Several transitions of one attempt in one batch (``running`` then
``succeeded``, reported together) become one change with intermediate steps: the row is
written once, in one guarded statement for the whole batch, and every applied transition still
logs its own event. Then, still in the transaction, ``settle`` creates retries, unblocks
dependents of successes and fails the dependents of terminal failures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from taskmesh.common.ledger import dependencies, retries
from taskmesh.common.ledger.changes import Change, Locked, lock_ids, notify_pending, write_changes
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
    """A judged batch: one outcome slot per transition, one change per attempt to write.

    Each change comes with the indices of the transitions it applies, in order: its steps,
    then its final state.
    """

    outcomes: list[TransitionOutcome] = field(default_factory=list)
    changes: list[tuple[list[int], Change]] = field(default_factory=list)


def plan(
    transitions: Sequence[Transition],
    locked: Mapping[UUID, Locked],
    detail: Mapping[str, object],
) -> Plan:
    """Judge each transition in order against the attempts as they will be by then."""
    result = Plan()
    current = {run_id: item.run for run_id, item in locked.items()}
    hops: dict[UUID, list[tuple[int, Run, datetime]]] = {}
    for index, transition in enumerate(transitions):
        run = current.get(transition.run_id)
        if run is None:
            result.outcomes.append(TransitionOutcome(transition, TransitionRefusal.UNKNOWN_RUN))
            continue
        reason = refusal(run, transition)
        result.outcomes.append(TransitionOutcome(transition, reason, run.state, run.epoch))
        if reason is not None:
            continue
        after = moved(locked[run.id], run, transition)
        hops.setdefault(run.id, []).append((index, after, transition.at))
        current[run.id] = after
    for run_id, path in hops.items():
        *steps, (_, after, at) = path
        change = Change(
            locked[run_id], after, at, detail, tuple((run, when) for _, run, when in steps)
        )
        result.changes.append(([index for index, _, _ in path], change))
    return result


async def apply(connection: AsyncConnection, changes: Sequence[Change]) -> dict[UUID, Run]:
    """Write the changes in one statement; returns the written attempts by id."""
    runs = await write_changes(connection, changes)
    if len(runs) != len(changes):  # the rows are locked: this is a planning bug
        raise RuntimeError("a planned transition was refused by the ledger's guard")
    return {run.id: run for run in runs}


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
    written = await apply(connection, [change for _, change in judged.changes])
    ended = _ended(locked, written.values())
    settlement = await settle(connection, ended, jitter, lost_retry_limit)
    at = max(transition.at for transition in transitions)
    woken = [*written.values(), *settlement.retries.values(), *settlement.unblocked]
    await notify_pending(connection, woken, at)
    return _outcomes(judged, written, settlement)


def _outcomes(
    judged: Plan, written: Mapping[UUID, Run], settlement: Settlement
) -> list[TransitionOutcome]:
    """Fill the applied outcomes with the attempts as written and any retry they caused.

    A step's outcome carries the attempt as it was at that step (never terminal: terminal
    states have no way out, so they can only come last).
    """
    outcomes = list(judged.outcomes)
    for indices, change in judged.changes:
        runs = [run for run, _ in change.steps] + [written[change.after.id]]
        for index, run in zip(indices, runs, strict=True):
            outcomes[index] = replace(
                outcomes[index],
                current_state=run.state,
                current_epoch=run.epoch,
                run=run,
                next_attempt=settlement.retries.get(run.id) if run.state.is_terminal else None,
            )
    return outcomes
