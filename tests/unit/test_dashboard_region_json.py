"""The region shape of ``GET /v1/cluster`` (``region_json``): the queue by priority."""

from __future__ import annotations

from taskmesh.common.rpc import cluster_pb2
from taskmesh.master.dashboard.region_json import region_json


def test_the_queue_by_priority_is_a_list_highest_priority_first() -> None:
    region = cluster_pb2.RegionStatus(
        name="eu", queue_depth=6, queue_depth_by_priority={0: 3, 10: 1, -5: 2}
    )
    body = region_json(region)
    assert body["queue_by_priority"] == [
        {"priority": 10, "runs": 1},
        {"priority": 0, "runs": 3},
        {"priority": -5, "runs": 2},
    ]
    assert "queue_depth_by_priority" not in body


def test_an_empty_queue_has_an_empty_list() -> None:
    assert region_json(cluster_pb2.RegionStatus(name="eu"))["queue_by_priority"] == []
