"""Claiming due runs for delegation, and taking back the runs a region refused.

A claim is three statements whatever its size: lock the best ready runs bound to each region
(at most its credit, ``SKIP LOCKED`` so concurrent claimers never wait for or share a run), lock
the best floating runs for the credit left over, then move them all to ``delegated`` with a
new epoch and log the events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmesh.common.ledger.rows import as_uuid, claimed_from_row
from taskmesh.common.model import ClaimedRun


@dataclass(frozen=True, slots=True)
class Pick:
    """A locked pending run and the region it goes to."""

    run_id: UUID
    epoch: int
    region: str


PICK_BOUND = text("""
    SELECT p.id, p.epoch, c.region
    FROM unnest(CAST(:regions AS text[]), CAST(:credits AS integer[])) AS c(region, credit)
    CROSS JOIN LATERAL (
        SELECT r.id, r.epoch FROM runs AS r
        WHERE r.state = 'pending' AND r.region = c.region
          AND r.ready_at <= CAST(:now AS timestamptz)
        ORDER BY r.priority DESC, r.due_at
        LIMIT c.credit
        FOR UPDATE SKIP LOCKED
    ) AS p
""")

# Floating runs: those with no region, best first straight off the claim index, and those
# whose preferred region is not taking work now but has a fallback that is (``:spillable``,
# strict ones stay). The regions of the backlog are found with a loose index scan, so neither
# part reads more than it returns. ``region`` is NULL for unbound runs, else the preferred one.
PICK_FLOATING = text("""
    WITH RECURSIVE backlog_regions(region) AS (
        (SELECT region FROM runs WHERE state = 'pending' AND region IS NOT NULL
         ORDER BY region LIMIT 1)
        UNION ALL
        SELECT (SELECT r.region FROM runs AS r
                WHERE r.state = 'pending' AND r.region > b.region
                ORDER BY r.region LIMIT 1)
        FROM backlog_regions AS b WHERE b.region IS NOT NULL
    ),
    unbound AS (
        SELECT r.id, r.epoch, r.region, r.priority, r.due_at FROM runs AS r
        WHERE r.state = 'pending' AND r.region IS NULL
          AND r.ready_at <= CAST(:now AS timestamptz)
        ORDER BY r.priority DESC, r.due_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ),
    spilled AS (
        SELECT s.* FROM backlog_regions AS b
        CROSS JOIN LATERAL (
            SELECT r.id, r.epoch, r.region, r.priority, r.due_at
            FROM runs AS r JOIN tasks AS t ON t.id = r.task_id
            WHERE r.state = 'pending' AND r.region = b.region AND t.placement = 'prefer'
              AND r.ready_at <= CAST(:now AS timestamptz)
            ORDER BY r.priority DESC, r.due_at
            LIMIT :limit
            FOR UPDATE OF r SKIP LOCKED
        ) AS s
        WHERE b.region = ANY(CAST(:spillable AS text[]))
    )
    SELECT id, epoch, region FROM (SELECT * FROM unbound UNION ALL SELECT * FROM spilled) AS f
    ORDER BY priority DESC, due_at
    LIMIT :limit
""")

DELEGATE = text("""
    WITH input AS (
        SELECT * FROM unnest(
            CAST(:run_ids AS uuid[]), CAST(:epochs AS bigint[]), CAST(:regions AS text[])
        ) AS i(run_id, epoch, region)
    ),
    claimed AS (
        UPDATE runs AS r SET
            state = 'delegated', epoch = r.epoch + 1, region = i.region,
            delegated_at = CAST(:now AS timestamptz), worker_id = NULL,
            spilled_from = CASE WHEN t.region <> i.region THEN t.region END
        FROM input AS i, tasks AS t
        WHERE r.id = i.run_id AND r.state = 'pending' AND r.epoch = i.epoch
          AND t.id = r.task_id
        RETURNING r.*
    ),
    logged AS (
        INSERT INTO run_events (at, run_id, task_id, attempt, from_state, to_state, epoch, region)
        SELECT delegated_at, id, task_id, attempt, 'pending', 'delegated', epoch, region
        FROM claimed
    )
    SELECT c.*, t.name AS task_name, t.command, t.executor, t.args, t.kind, t.placement,
           t.timeout, t.schedule_to_start_timeout, t.labels
    FROM claimed AS c JOIN tasks AS t ON t.id = c.task_id
    ORDER BY c.region, c.priority DESC, c.due_at
""")


async def _pick_bound(
    connection: AsyncConnection, credits: Mapping[str, int], now: datetime
) -> list[Pick]:
    """Lock the best ready runs bound to each region, at most its credit."""
    names = sorted(name for name, credit in credits.items() if credit > 0)
    if not names:
        return []
    params = {"regions": names, "credits": [credits[name] for name in names], "now": now}
    rows = await connection.execute(PICK_BOUND, params)
    return [Pick(as_uuid(row.id), row.epoch, row.region) for row in rows]


@dataclass(frozen=True, slots=True)
class Floating:
    """A locked run without a region to go to now: ``preferred`` is None for an unbound one."""

    run_id: UUID
    epoch: int
    preferred: str | None


def place(
    floating: Sequence[Floating],
    leftover: Mapping[str, int],
    fallbacks: Mapping[str, Sequence[str]],
) -> list[Pick]:
    """Place floating runs, best first: unbound ones where most credit is left, spilled ones
    in the first fallback of their preferred region with credit left; the rest stay."""
    credit = {name: left for name, left in leftover.items() if left > 0}
    picks: list[Pick] = []
    for run in floating:
        if run.preferred is None:
            candidates: Sequence[str] = sorted(credit, key=lambda name: (-credit[name], name))
        else:
            candidates = [name for name in fallbacks.get(run.preferred, ()) if name in credit]
        if not candidates:
            continue
        region = candidates[0]
        picks.append(Pick(run.run_id, run.epoch, region))
        credit[region] -= 1
        if credit[region] == 0:
            del credit[region]
    return picks


def spillable(credits: Mapping[str, int], fallbacks: Mapping[str, Sequence[str]]) -> list[str]:
    """Regions not taking work now (absent from ``credits``) with a fallback that has credit."""
    return sorted(
        name
        for name, names in fallbacks.items()
        if name not in credits and any(credits.get(other, 0) > 0 for other in names)
    )


async def _pick_floating(
    connection: AsyncConnection,
    leftover: Mapping[str, int],
    fallbacks: Mapping[str, Sequence[str]],
    now: datetime,
) -> list[Pick]:
    """Lock the best floating runs for the leftover credit and place them."""
    limit = sum(credit for credit in leftover.values() if credit > 0)
    if limit == 0:
        return []
    params = {"spillable": spillable(leftover, fallbacks), "limit": limit, "now": now}
    rows = await connection.execute(PICK_FLOATING, params)
    floating = [Floating(as_uuid(row.id), row.epoch, row.region) for row in rows]
    return place(floating, leftover, fallbacks)


async def claim_due_runs(
    connection: AsyncConnection,
    credits: Mapping[str, int],
    now: datetime,
    fallbacks: Mapping[str, Sequence[str]] | None = None,
) -> list[ClaimedRun]:
    """Claim ready pending runs for the regions in ``credits``, never past a region's credit.

    ``credits`` lists every region that can take work now (0: healthy but full). A run bound to
    a region absent from it spills over to the first of that region's ``fallbacks`` with credit
    left when its task's placement is ``prefer``; a ``strict`` one waits for its region.
    """
    bound = await _pick_bound(connection, credits, now)
    used = Counter(pick.region for pick in bound)
    leftover = {name: credit - used[name] for name, credit in credits.items()}
    picks = bound + await _pick_floating(connection, leftover, fallbacks or {}, now)
    if not picks:
        return []
    params = {
        "run_ids": [pick.run_id for pick in picks],
        "epochs": [pick.epoch for pick in picks],
        "regions": [pick.region for pick in picks],
        "now": now,
    }
    rows = await connection.execute(DELEGATE, params)
    return [claimed_from_row(row) for row in rows.mappings()]


# The earliest time a pending run becomes claimable after ``now``, off ``ix_runs_ready``: the
# dispatcher's timer. Runs ready already are not in it: they wait for credit, not for time.
NEXT_READY = text("""
    SELECT min(ready_at) FROM runs
    WHERE state = 'pending' AND ready_at > CAST(:now AS timestamptz)
""")


async def next_ready_at(connection: AsyncConnection, now: datetime) -> datetime | None:
    """When the next pending run becomes claimable after ``now``; None when none will by time."""
    at: datetime | None = (await connection.execute(NEXT_READY, {"now": now})).scalar_one()
    return at


# A parked run is pending but not ready before ``until``: dispatchers skip it until then.
PARK = text("""
    UPDATE runs SET ready_at = CAST(:until AS timestamptz)
    WHERE id = ANY(CAST(:run_ids AS uuid[])) AND state = 'pending'
""")


async def park(connection: AsyncConnection, run_ids: Sequence[UUID], until: datetime) -> None:
    """Hold pending runs back until ``until``."""
    await connection.execute(PARK, {"run_ids": list(run_ids), "until": until})
