"""``GET /v1/cluster``: the regions as ``GetCluster`` gives them, plus task totals by state.

Regions and workers are the ``GetClusterResponse`` messages in proto3 JSON, dated by
``observed_at`` (the master's clock) so the page computes heartbeat ages without trusting the
browser's clock. The totals count the latest run state of the newest ``TASKS_COUNTED`` tasks:
a bounded read the ledger already offers; ``tasks_truncated`` says when there were more.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from taskmesh.common.model import TaskStatus
from taskmesh.common.rpc.values import timestamp
from taskmesh.master.task_api import MAX_PAGE, TaskApi
from taskmesh.master.task_json import message_json

TASKS_COUNTED = MAX_PAGE
NO_RUN = "no_run"  # a recurring task whose first run is not materialised yet


async def cluster_overview(api: TaskApi, now: datetime) -> dict[str, Any]:
    """The overview: ``observed_at``, ``regions``, ``task_states`` and how they were counted."""
    regions, recent = await asyncio.gather(api.cluster(), api.list_tasks(limit=TASKS_COUNTED))
    return {
        "observed_at": timestamp(now).ToJsonString(),
        "regions": [message_json(region) for region in regions],
        "task_states": latest_states(recent.items),
        "tasks_counted": len(recent.items),
        "tasks_truncated": bool(recent.next_token),
    }


def latest_states(statuses: Iterable[TaskStatus]) -> dict[str, int]:
    """How many of these tasks have their latest run in each state (``no_run``: none yet)."""
    counts = Counter(
        NO_RUN if status.latest_run is None else status.latest_run.state.value
        for status in statuses
    )
    return dict(sorted(counts.items()))
