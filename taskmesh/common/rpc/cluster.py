"""The cluster view on the wire: the ledger's regions and workers, both ways.

RegionStatus and WorkerStatus carry model.Region and model.Worker plus live figures (breakers,
queue depth, free slots) that only a running daemon knows; the caller sets those on the
returned message, and decoding ignores them.
"""

from __future__ import annotations

from taskmesh.common import model
from taskmesh.common.breakers import BreakerSnapshot
from taskmesh.common.rpc import cluster_pb2
from taskmesh.common.rpc.values import REGION_STATES, WORKER_STATES, instant, member, timestamp


def region_to_proto(region: model.Region) -> cluster_pb2.RegionStatus:
    """A RegionStatus with the ledger's fields of a region set."""
    return cluster_pb2.RegionStatus(
        name=region.name,
        address=region.address,
        credit=region.credit,
        heartbeat_at=timestamp(region.heartbeat_at),
        state=REGION_STATES[region.state],
    )


def region_from_proto(message: cluster_pb2.RegionStatus) -> model.Region:
    """The ledger's view of a region in a RegionStatus."""
    return model.Region(
        name=message.name,
        address=message.address,
        credit=message.credit,
        heartbeat_at=instant(message.heartbeat_at),
        state=member(REGION_STATES, message.state, "state"),
    )


def worker_to_proto(worker: model.Worker) -> cluster_pb2.WorkerStatus:
    """A WorkerStatus with the ledger's fields of a worker set."""
    return cluster_pb2.WorkerStatus(
        id=worker.id,
        region=worker.region,
        slots=worker.slots,
        heartbeat_at=timestamp(worker.heartbeat_at),
        labels=worker.labels,
        state=WORKER_STATES[worker.state],
    )


def worker_from_proto(message: cluster_pb2.WorkerStatus) -> model.Worker:
    """The ledger's view of a worker in a WorkerStatus."""
    return model.Worker(
        id=message.id,
        region=message.region,
        slots=message.slots,
        heartbeat_at=instant(message.heartbeat_at),
        labels=dict(message.labels),
        state=member(WORKER_STATES, message.state, "state"),
    )


BREAKER_STATES = {
    "closed": cluster_pb2.BREAKER_STATE_CLOSED,
    "open": cluster_pb2.BREAKER_STATE_OPEN,
    "half-open": cluster_pb2.BREAKER_STATE_HALF_OPEN,
}


def breaker_state_to_proto(state: str) -> cluster_pb2.BreakerState.ValueType:
    """The wire state of a breaker from pybreaker's state name."""
    return BREAKER_STATES.get(state, cluster_pb2.BREAKER_STATE_UNSPECIFIED)


def breaker_to_proto(snapshot: BreakerSnapshot) -> cluster_pb2.BreakerStatus:
    """A BreakerStatus: state, failures and, while not closed, opened_at and trial_at."""
    return cluster_pb2.BreakerStatus(
        state=breaker_state_to_proto(snapshot.state),
        failures=snapshot.failures,
        opened_at=timestamp(snapshot.opened_at),
        trial_at=timestamp(snapshot.trial_at),
    )
