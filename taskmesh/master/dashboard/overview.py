"""``GET /v1/cluster`` and ``GET /v1/activity``: the cluster at a glance, and its last minutes.

Regions and workers are the ``GetClusterResponse`` messages in proto3 JSON (breakers and
spillover in the simpler shape of ``region_json``), dated by
``observed_at`` (the master's clock) so the page computes heartbeat ages without trusting the
browser's clock. ``run_states`` counts every attempt by state, exactly (``count_runs_by_state``).
The activity is the ledger's ``run_activity`` slices: attempts ended and pickup latency.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from taskmesh.common.model import ActivityBucket
from taskmesh.common.rpc.values import timestamp
from taskmesh.master.dashboard.region_json import region_json
from taskmesh.master.task_api import TaskApi

ACTIVITY_WINDOW = timedelta(minutes=15)
ACTIVITY_STEP = timedelta(seconds=10)


def instant_json(instant: datetime) -> str:
    """An instant as RFC 3339 text, the way proto3 JSON writes timestamps."""
    return timestamp(instant).ToJsonString()


async def cluster_overview(api: TaskApi, now: datetime) -> dict[str, Any]:
    """The overview: ``observed_at``, ``regions`` and ``run_states`` (attempts by state)."""
    regions, totals = await asyncio.gather(api.cluster(), api.run_totals())
    return {
        "observed_at": instant_json(now),
        "regions": [region_json(region) for region in regions],
        "run_states": {str(state): count for state, count in sorted(totals.items())},
    }


def bucket_json(bucket: ActivityBucket) -> dict[str, Any]:
    """One activity slice; latencies in seconds, null when nothing started in the slice."""
    return {
        "start": instant_json(bucket.start),
        "finished": bucket.finished,
        "failed": bucket.failed,
        "pickup_p50": bucket.pickup_p50,
        "pickup_p95": bucket.pickup_p95,
    }


async def cluster_activity(api: TaskApi, now: datetime) -> dict[str, Any]:
    """The last ``ACTIVITY_WINDOW`` in ``ACTIVITY_STEP`` slices, oldest first."""
    buckets = await api.run_activity(ACTIVITY_WINDOW, ACTIVITY_STEP)
    return {
        "observed_at": instant_json(now),
        "step_seconds": ACTIVITY_STEP.total_seconds(),
        "window_seconds": ACTIVITY_WINDOW.total_seconds(),
        "buckets": [bucket_json(bucket) for bucket in buckets],
    }
