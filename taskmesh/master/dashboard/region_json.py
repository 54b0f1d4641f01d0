"""One region of ``GET /v1/cluster`` in the simple shape the README documents.

The proto3 JSON of a RegionStatus is kept, except that every breaker becomes one object,
``{"state", "failures", "opened_at", "trial_at"}`` (state ``closed``, ``open``, ``half_open``
or ``unspecified``; the times RFC 3339 or null): ``regions[].breaker`` (the master's breaker
towards the region), ``regions[].kinds[]`` (one per task kind, plus ``kind`` and ``waiting``)
and ``workers[].breaker``; the spillover counts become ``regions[].spillover``
``{"in", "out", "window_seconds"}``; and the queue by priority becomes
``regions[].queue_by_priority``, ``[{"priority", "runs"}]`` highest priority first.
"""

from __future__ import annotations

from typing import Any

from taskmesh.common.rpc import cluster_pb2
from taskmesh.master.task_json import message_json

STATE_PREFIX = "BREAKER_STATE_"


def region_json(region: cluster_pb2.RegionStatus) -> dict[str, Any]:
    """A region with its breakers, kinds, workers and spillover in the documented shape."""
    body = message_json(region)
    for key in ("breaker_status", "kind_breakers", "spilled_in", "spilled_out"):
        body.pop(key, None)
    body.pop("spillover_window_seconds", None)
    body.pop("queue_depth_by_priority", None)
    body["queue_by_priority"] = [
        {"priority": priority, "runs": runs}
        for priority, runs in sorted(region.queue_depth_by_priority.items(), reverse=True)
    ]
    body["breaker"] = breaker_json(region.breaker_status)
    body["kinds"] = [
        {"kind": kind.kind, **breaker_json(kind), "waiting": kind.waiting}
        for kind in region.kind_breakers
    ]
    body["spillover"] = {
        "in": region.spilled_in,
        "out": region.spilled_out,
        "window_seconds": region.spillover_window_seconds,
    }
    body["fallbacks"] = list(region.fallbacks)
    workers = body.get("workers", [])
    for worker, message in zip(workers, region.workers, strict=True):
        worker.pop("breaker_status", None)
        worker["breaker"] = breaker_json(message.breaker_status)
    body["workers"] = workers
    return body


def breaker_json(breaker: cluster_pb2.BreakerStatus | cluster_pb2.KindBreaker) -> dict[str, Any]:
    """``{"state", "failures", "opened_at", "trial_at"}`` of a breaker."""
    name = cluster_pb2.BreakerState.Name(breaker.state).removeprefix(STATE_PREFIX).lower()
    return {
        "state": name,
        "failures": breaker.failures,
        "opened_at": breaker.opened_at.ToJsonString() if breaker.HasField("opened_at") else None,
        "trial_at": breaker.trial_at.ToJsonString() if breaker.HasField("trial_at") else None,
    }
