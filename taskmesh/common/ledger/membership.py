"""Regions and workers: registration, heartbeats, staleness."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmesh.common.ledger.rows import region_from_row, worker_from_row
from taskmesh.common.ledger.schema import regions, workers
from taskmesh.common.model import Region, RegionState, Worker, WorkerState


async def heartbeat_region(
    connection: AsyncConnection,
    *,
    name: str,
    address: str,
    credit: int,
    now: datetime,
    state: RegionState,
) -> Region:
    """Register a region or refresh it: address, advertised credit, heartbeat time, state."""
    values = {
        "name": name,
        "address": address,
        "credit": credit,
        "heartbeat_at": now,
        "state": str(state),
    }
    insert = pg_insert(regions).values(values)
    query = insert.on_conflict_do_update(
        index_elements=[regions.c.name],
        set_={key: insert.excluded[key] for key in values if key != "name"},
    ).returning(regions)
    return region_from_row((await connection.execute(query)).mappings().one())


async def stale_regions(
    connection: AsyncConnection, now: datetime, stale_after: timedelta
) -> list[Region]:
    """Regions not yet marked down whose last heartbeat is older than ``stale_after``."""
    query = (
        select(regions)
        .where(regions.c.heartbeat_at < now - stale_after, regions.c.state != str(RegionState.DOWN))
        .order_by(regions.c.name)
    )
    return [region_from_row(row) for row in (await connection.execute(query)).mappings()]


async def mark_region_down(connection: AsyncConnection, name: str) -> None:
    """Record that a region was found dead and reaped (its next heartbeat revives it)."""
    query = update(regions).where(regions.c.name == name).values(state=str(RegionState.DOWN))
    await connection.execute(query)


async def upsert_worker(
    connection: AsyncConnection,
    *,
    worker_id: str,
    region: str,
    slots: int,
    labels: Mapping[str, str],
    now: datetime,
) -> Worker:
    """Register a worker, or re-register it (it may have moved region or changed size)."""
    values = {
        "id": worker_id,
        "region": region,
        "slots": slots,
        "labels": dict(labels),
        "heartbeat_at": now,
        "state": str(WorkerState.UP),
    }
    insert = pg_insert(workers).values(values)
    query = insert.on_conflict_do_update(
        index_elements=[workers.c.id],
        set_={key: insert.excluded[key] for key in values if key != "id"},
    ).returning(workers)
    return worker_from_row((await connection.execute(query)).mappings().one())


async def heartbeat_workers(
    connection: AsyncConnection, worker_ids: Collection[str], now: datetime
) -> frozenset[str]:
    """Refresh many workers' heartbeats in one statement; returns the ids not registered."""
    if not worker_ids:
        return frozenset()
    query = (
        update(workers)
        .where(workers.c.id.in_(sorted(set(worker_ids))))
        .values(heartbeat_at=now)
        .returning(workers.c.id)
    )
    known = set((await connection.execute(query)).scalars())
    return frozenset(set(worker_ids) - known)


async def set_worker_state(connection: AsyncConnection, worker_id: str, state: WorkerState) -> bool:
    """Mark a worker up, draining or down; False when it is not registered."""
    query = (
        update(workers)
        .where(workers.c.id == worker_id)
        .values(state=str(state))
        .returning(workers.c.id)
    )
    return (await connection.execute(query)).first() is not None


async def remove_worker(connection: AsyncConnection, worker_id: str) -> bool:
    """Forget a worker; False when it was not registered."""
    query = delete(workers).where(workers.c.id == worker_id).returning(workers.c.id)
    return (await connection.execute(query)).first() is not None
