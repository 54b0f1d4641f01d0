"""The operator's view of the cluster: each region as the ledger, the region and the master see it.

The ledger knows heartbeats and registered workers; a region that answers ``Describe`` adds its
live figures (credit, queue, breakers, workers); the master adds its own breaker towards the
region and whether the region answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pybreaker import STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import Region, RegionState, Worker
from taskmesh.common.rpc import cluster_pb2
from taskmesh.common.rpc.cluster import worker_to_proto
from taskmesh.common.rpc.values import REGION_STATES, timestamp
from taskmesh.master.region_clients import RegionClient, RegionClients

BREAKER_STATES = {
    STATE_CLOSED: cluster_pb2.BREAKER_STATE_CLOSED,
    STATE_OPEN: cluster_pb2.BREAKER_STATE_OPEN,
    STATE_HALF_OPEN: cluster_pb2.BREAKER_STATE_HALF_OPEN,
}


async def cluster_status(ledger: Ledger, regions: RegionClients) -> list[cluster_pb2.RegionStatus]:
    """Every topology region's status, in topology order."""
    known = {region.name: region for region in await ledger.list_regions()}
    workers = await ledger.list_workers()
    clients = list(regions)
    described = await asyncio.gather(*(client.describe() for client in clients))
    return [
        region_status(client, known.get(client.name), status, workers)
        for client, status in zip(clients, described, strict=True)
    ]


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
    status.breaker = BREAKER_STATES.get(client.breaker_state, cluster_pb2.BREAKER_STATE_UNSPECIFIED)
    status.reachable = described is not None
    return status


def _state(region: Region | None, *, reachable: bool) -> RegionState:
    """The ledger's state of a region; for one never heard of, whether it answered now."""
    if region is not None:
        return region.state
    return RegionState.UP if reachable else RegionState.DOWN
