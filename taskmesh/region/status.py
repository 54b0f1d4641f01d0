"""The region as it reports itself: ``Describe``'s RegionStatus and the HTTP readiness report."""

from __future__ import annotations

from datetime import datetime

from taskmesh.common.model import RegionState, WorkerState
from taskmesh.common.probes import Component, Readiness
from taskmesh.common.rpc import cluster_pb2
from taskmesh.common.rpc.cluster import breaker_state_to_proto, breaker_to_proto
from taskmesh.common.rpc.values import EXECUTORS, REGION_STATES, WORKER_STATES, timestamp
from taskmesh.region.metrics import priority_band
from taskmesh.region.runtime import RegionRuntime
from taskmesh.region.worker_registry import ConnectedWorker


def region_state(runtime: RegionRuntime) -> RegionState:
    """UP, or DRAINING once shutdown began."""
    return RegionState.DRAINING if runtime.draining else RegionState.UP


def worker_status(runtime: RegionRuntime, worker: ConnectedWorker) -> cluster_pb2.WorkerStatus:
    """One worker's WorkerStatus."""
    state = WorkerState.DRAINING if worker.draining else WorkerState.UP
    breaker = runtime.board.worker(worker.id)
    return cluster_pb2.WorkerStatus(
        id=worker.id,
        region=runtime.name,
        slots=worker.slots,
        heartbeat_at=timestamp(worker.heartbeat_at),
        labels=worker.labels,
        state=WORKER_STATES[state],
        breaker=breaker_state_to_proto(breaker.state),
        free_slots=worker.credit,
        running=len(worker.held),
        executors=[EXECUTORS[executor] for executor in sorted(worker.executors)],
        connected_at=timestamp(worker.connected_at),
        breaker_status=breaker_to_proto(breaker.snapshot()),
    )


def region_status(
    runtime: RegionRuntime, heartbeat_at: datetime | None
) -> cluster_pb2.RegionStatus:
    """The RegionStatus ``Describe`` answers (the master's own fields left unset)."""
    workers = list(runtime.registry)
    return cluster_pb2.RegionStatus(
        name=runtime.name,
        address=runtime.address,
        credit=runtime.credit,
        heartbeat_at=timestamp(heartbeat_at),
        state=REGION_STATES[region_state(runtime)],
        queue_depth=len(runtime.queue),
        queue_depth_by_priority=runtime.queue.depth_by_priority(),
        running=runtime.registry.running,
        total_slots=sum(worker.slots for worker in workers),
        free_slots=sum(worker.credit for worker in workers),
        kind_breakers=kind_breakers(runtime),
        workers=[worker_status(runtime, worker) for worker in workers],
    )


def kind_breakers(runtime: RegionRuntime) -> list[cluster_pb2.KindBreaker]:
    """Each kind breaker the region has, with the runs of its kind waiting in the queue."""
    waiting = runtime.queue.depth_by_kind()
    statuses = []
    for kind, breaker in runtime.board.kinds():
        snapshot = breaker.snapshot()
        statuses.append(
            cluster_pb2.KindBreaker(
                kind=kind,
                state=breaker_state_to_proto(snapshot.state),
                failures=snapshot.failures,
                opened_at=timestamp(snapshot.opened_at),
                trial_at=timestamp(snapshot.trial_at),
                waiting=waiting.get(kind, 0),
            )
        )
    return statuses


def readiness(runtime: RegionRuntime, ledger_reachable: bool) -> Readiness:
    """What ``/readyz`` answers: ready while the ledger answers and the region is not draining.

    The master's calls and the workers are shown but do not decide: a region queues work
    before its workers connect, and a supervisor may start the master or the workers only once
    the region is ready.
    """
    workers = list(runtime.registry)
    bands: dict[str, int] = {}
    for priority, count in runtime.queue.depth_by_priority().items():
        band = priority_band(priority)
        bands[band] = bands.get(band, 0) + count
    return Readiness(
        f"region {runtime.name}",
        (
            Component(
                "ledger",
                ledger_reachable,
                {
                    "unwritten_transitions": runtime.writer.pending,
                    "stale_epoch_refusals": runtime.writer.stale_refusals,
                },
            ),
            Component("state", not runtime.draining, {"state": str(region_state(runtime))}),
            Component("master", True, {"last_delegate_seconds_ago": _since(runtime)}),
            Component(
                "workers",
                True,
                {
                    "connected": len(workers),
                    "draining": sum(worker.draining for worker in workers),
                    "slots": sum(worker.slots for worker in workers),
                    "free_slots": sum(worker.credit for worker in workers),
                    "running": runtime.registry.running,
                },
            ),
            Component("autoscaling", True, {"desired_workers": runtime.desired_workers}),
            Component(
                "queue",
                True,
                {"depth": len(runtime.queue), "credit": runtime.credit, "by_band": bands},
            ),
        ),
    )


def _since(runtime: RegionRuntime) -> float | None:
    """Seconds since the master last called ``Delegate`` (credit probes too); None if never."""
    heard = runtime.heard_from_master
    return None if heard is None else round(runtime.clock() - heard, 3)
