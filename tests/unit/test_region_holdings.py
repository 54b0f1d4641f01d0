"""A queued run is compact: its claim is kept as wire bytes and decoded when it leaves the queue."""

from __future__ import annotations

import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from taskmesh.common.model import ClaimedRun, Executor, Placement
from taskmesh.common.rpc.runs import claimed_run_to_proto
from taskmesh.region.holdings import QueuedRun
from taskmesh.region.run_queue import RunQueue

NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)
# What one queued no-op run of the benchmark may cost the region (it measured ~620 bytes;
# a decoded ClaimedRun alone is over 1 KB).
QUEUED_RUN_BYTES = 800


def claimed_run(index: int, **fields: object) -> ClaimedRun:
    values: dict[str, object] = {
        "run_id": uuid4(),
        "task_id": uuid4(),
        "task_name": f"memory-queued-{index}",
        "attempt": 1,
        "epoch": 3,
        "priority": 2,
        "region": "hold",
        "due_at": NOW,
        "delegated_at": NOW + timedelta(seconds=1),
        "command": "noop",
        "executor": Executor.NOOP,
        "args": (),
        "kind": "default",
        "placement": Placement.STRICT,
        "labels": {"bench": "memory-queued"},
    }
    return ClaimedRun(**{**values, **fields})  # type: ignore[arg-type]


def test_the_claim_comes_back_whole_from_its_wire_bytes() -> None:
    claimed = claimed_run(
        1,
        args=("a", "b"),
        kind="etl",
        timeout=timedelta(seconds=30),
        schedule_to_start_timeout=timedelta(minutes=2),
        labels={"team": "data"},
    )
    wire = claimed_run_to_proto(claimed)
    for queued in (QueuedRun(claimed, 5, 1.0), QueuedRun(claimed, 5, 1.0, wire=wire)):
        assert (queued.key, queued.epoch, queued.kind) == (str(claimed.run_id), 3, "etl")
        assert queued.run_id == claimed.run_id
        assert queued.priority == 5
        assert queued.claimed == claimed


def test_a_decoded_claim_is_dropped_when_the_run_is_queued_again() -> None:
    queued = QueuedRun(claimed_run(1), 0, 1.0)
    first = queued.claimed
    assert queued.claimed is first  # kept while the run is out of the queue
    queued.compact()
    assert queued.claimed is not first
    assert queued.claimed == first


def test_a_queued_run_costs_the_region_a_few_hundred_bytes() -> None:
    count = 5_000
    claims = [claimed_run(index) for index in range(count)]
    queue: RunQueue[QueuedRun] = RunQueue(count, timedelta(seconds=10), time.monotonic)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for claimed in claims:
            queued = QueuedRun(claimed, claimed.priority, time.monotonic())
            queue.push(queued.key, queued.kind, queued.priority, queued)
        per_run = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert per_run <= QUEUED_RUN_BYTES, per_run
