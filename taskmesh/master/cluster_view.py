"""The operator's view of the cluster: each region as the ledger, the region and the master see it.

The ledger knows heartbeats and registered workers; a region that answers ``Describe`` adds its
live figures (credit, queue, breakers, workers); the master adds its own breaker towards the
region, whether the region answered, its fallbacks and the spillover of the last
``SPILLOVER_WINDOW`` (counted in the ledger, so every master reports the same).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import Region, RegionState, Worker
from taskmesh.common.rpc import cluster_pb2
from taskmesh.common.rpc.cluster import breaker_state_to_proto, breaker_to_proto, worker_to_proto
from taskmesh.common.rpc.values import REGION_STATES, timestamp
from taskmesh.master.region_clients import RegionClient, RegionClients

SPILLOVER_WINDOW = timedelta(minutes=5)  # "recent" spillover in the cluster view


async def cluster_status(
    ledger: Ledger, regions: RegionClients, now: datetime
) -> list[cluster_pb2.RegionStatus]:
    """Every topology region's status, in topology order."""
    known = {region.name: region for region in await ledger.list_regions()}
    workers = await ledger.list_workers()
    spilled = await ledger.spillover_counts(now - SPILLOVER_WINDOW)
    clients = list(regions)
    described = await asyncio.gather(*(client.describe() for client in clients))
    statuses = [
        region_status(client, known.get(client.name), status, workers)
        for client, status in zip(clients, described, strict=True)
    ]
    for status in statuses:
        add_spillover(status, spilled)
    return statuses


def add_spillover(status: cluster_pb2.RegionStatus, spilled: Mapping[tuple[str, str], int]) -> None:
    """Set the region's spillover counts from (from, to) region counts."""
    status.spilled_out = sum(n for (source, _), n in spilled.items() if source == status.name)
    status.spilled_in = sum(n for (_, target), n in spilled.items() if target == status.name)
    status.spillover_window_seconds = int(SPILLOVER_WINDOW.total_seconds())


def region_status(
    client: RegionClient,
    region: Region | None,
    described: cluster_pb2.RegionStatus | None,
    workers: Sequence[Worker],
) -> cluster_pb2.RegionStatus:
    """One region's status from the three sources; the region's own figures when it answered."""
    status = cluster_pb2.RegionStatus()
    if described is not None:
        status.CopyFrom(described)
    else:
        status.credit = client.credit or 0
        status.queue_depth = client.queue_depth
        status.workers.extend(worker_to_proto(w) for w in workers if w.region == client.name)
    status.name = client.name
    status.address = client.address
    status.state = REGION_STATES[_state(region, reachable=described is not None)]
    if region is not None:
        status.heartbeat_at.CopyFrom(timestamp(region.heartbeat_at))
    status.breaker = breaker_state_to_proto(client.breaker_state)
    status.breaker_status.CopyFrom(breaker_to_proto(client.breaker.snapshot()))
    status.reachable = described is not None
    status.fallbacks[:] = client.fallbacks
    return status


def _state(region: Region | None, *, reachable: bool) -> RegionState:
    """The ledger's state of a region; for one never heard of, whether it answered now."""
    if region is not None:
        return region.state
    return RegionState.UP if reachable else RegionState.DOWN
