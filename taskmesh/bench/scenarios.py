"""The measurements, each against a running cluster and read back from the ledger.

- ``throughput``: N no-op runs from the first submission to the last ``succeeded``.
- ``pickup``: runs offered at a fixed rate; due → started latency percentiles.
- ``submission``: tasks stored per second, single and batched, over gRPC and REST.
- ``probe``: the same PostgreSQL claiming and completing bare rows with ``SKIP LOCKED``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from taskmesh.bench.load import (
    BenchmarkError,
    Submitter,
    batches,
    bounded,
    noop_specs,
    submit_request,
    task_body,
    workflow_body,
    workflow_request,
)
from taskmesh.common.ledger.benchmarks import BenchmarkLedger, ProbeResult
from taskmesh.common.model import TERMINAL_STATES, AtSchedule, RunState

BATCH_SIZE = 1000  # tasks per batched submission
BATCHES_IN_FLIGHT = 2
SINGLES_IN_FLIGHT = 32
PICKUP_LEAD = 2.0  # seconds before their due time that pickup runs are submitted
PICKUP_SLICE = 0.1  # seconds of due times per pickup submission
PICKUP_IN_FLIGHT = 64
POLL_INTERVAL = 0.25
PROBE_BATCHES = (10, 100, 500, 1000, 5000)
PROBE_TRIAL_ROWS = 20_000
FAILED_STATES = frozenset(str(state) for state in TERMINAL_STATES - {RunState.SUCCEEDED})
# Submission benchmarks store tasks due this far ahead: measured, never executed.
NOT_BEFORE = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Target:
    """Where the runs go and how the results are read."""

    submitter: Submitter
    ledger: BenchmarkLedger
    regions: tuple[str, ...]


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending sequence (0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(ordered: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max of ascending seconds, in milliseconds."""
    points = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "max": 1.0}
    return {name: round(percentile(ordered, q) * 1000, 1) for name, q in points.items()}


async def wait_until_succeeded(
    ledger: BenchmarkLedger, tag: str, count: int, within: float
) -> None:
    """Return once ``count`` runs of ``tag`` succeeded; ``BenchmarkError`` on failure or time."""
    deadline = time.monotonic() + within
    while True:
        states = await ledger.state_counts(tag)
        failed = {state: n for state, n in states.items() if state in FAILED_STATES}
        if failed:
            raise BenchmarkError(f"{tag}: runs ended without success: {failed}")
        if states.get(str(RunState.SUCCEEDED), 0) >= count:
            return
        if time.monotonic() > deadline:
            message = f"{tag}: not all {count} runs succeeded in {within:.0f}s: {states}"
            raise BenchmarkError(message)
        await asyncio.sleep(POLL_INTERVAL)


async def warm_up(target: Target, tag: str, count: int) -> None:
    """``count`` runs through every region, so that workers are connected before timing."""
    specs = noop_specs(tag, count, target.regions)
    await target.submitter.submit_workflow(workflow_request(specs))
    await wait_until_succeeded(target.ledger, tag, count, 120.0)


def finish_timeout(runs: int) -> float:
    """A generous bound for ``runs`` to finish: catches a hang, never judges speed."""
    return 120.0 + runs / 20


async def throughput(target: Target, runs: int, tag: str = "throughput") -> dict[str, Any]:
    """Submit ``runs`` no-op runs (labelled ``tag``) in batches; time until the last succeeded."""
    requests = [
        workflow_request(batch)
        for batch in batches(noop_specs(tag, runs, target.regions), BATCH_SIZE)
    ]
    started = time.time()
    await bounded((target.submitter.submit_workflow(r) for r in requests), BATCHES_IN_FLIGHT)
    submitted = time.time()
    await wait_until_succeeded(target.ledger, tag, runs, finish_timeout(runs))
    timings = await target.ledger.timings(tag)
    assert timings.last_finished is not None
    seconds = timings.last_finished - started
    return {
        "runs": runs,
        "submit_seconds": round(submitted - started, 3),
        "seconds": round(seconds, 3),
        "runs_per_second": round(runs / seconds, 1),
        "stages": await target.ledger.stages(tag),
    }


async def pickup(target: Target, rate: int, seconds: float) -> tuple[dict[str, Any], list[float]]:
    """Runs falling due at ``rate`` per second for ``seconds``; due → started latencies.

    Each run is scheduled (``at``) for its own instant, evenly spaced, and submitted
    ``PICKUP_LEAD`` ahead of it in slices of ``PICKUP_SLICE``: what is measured is the
    scheduler acting on a due time, not how fast it stores tasks (``submission`` does that).
    A run the master stored after its due time still counts from its due time; how many were
    is reported as ``late``. Due times come from this process's wall clock and starts from
    the workers' on the same host, so the two are comparable.
    """
    tag = f"pickup-{rate}"
    total = max(1, round(rate * seconds))
    first_due = time.time() + PICKUP_LEAD
    dues = [first_due + index / rate for index in range(total)]
    specs = [
        replace(spec, schedule=AtSchedule(datetime.fromtimestamp(due, UTC)))
        for spec, due in zip(noop_specs(tag, total, target.regions), dues, strict=True)
    ]
    per_slice = max(1, round(rate * PICKUP_SLICE))
    calls = []
    for start in range(0, total, per_slice):
        request = workflow_request(specs[start : start + per_slice])
        calls.append(_submitted_at(target, request, dues[start] - PICKUP_LEAD))
    await bounded(calls, PICKUP_IN_FLIGHT)
    await wait_until_succeeded(target.ledger, tag, total, finish_timeout(total))
    timings = await target.ledger.timings(tag)
    result = {
        "rate": rate,
        "runs": total,
        "achieved_rate": round(total / max(dues[-1] - first_due + 1 / rate, 1e-9), 1),
        "late": timings.late,
        **latency_summary(timings.pickups),
        "stages": await target.ledger.stages(tag),
    }
    return result, list(timings.pickups)


async def _submitted_at(target: Target, request: Any, wall_time: float) -> None:
    """Submit ``request`` once the wall clock reaches ``wall_time``."""
    await asyncio.sleep(max(0.0, wall_time - time.time()))
    await target.submitter.submit_workflow(request)


async def submission(target: Target, singles: int, batched: int) -> dict[str, Any]:
    """Tasks stored per second: single and batched, over gRPC and REST (due a day later)."""
    at = datetime.now(UTC) + NOT_BEFORE
    submitter, regions = target.submitter, target.regions
    specs = {
        mode: noop_specs(f"submit-{mode}", count, regions, at)
        for mode, count in (
            ("grpc_single", singles),
            ("grpc_batch", batched),
            ("rest_single", singles),
            ("rest_batch", batched),
        )
    }
    plans = {
        "grpc_single": ([submitter.submit(submit_request(s)) for s in specs["grpc_single"]], 1),
        "grpc_batch": (
            [
                submitter.submit_workflow(workflow_request(b))
                for b in batches(specs["grpc_batch"], BATCH_SIZE)
            ],
            0,
        ),
        "rest_single": ([submitter.post_task(task_body(s)) for s in specs["rest_single"]], 1),
        "rest_batch": (
            [
                submitter.post_workflow(workflow_body(b))
                for b in batches(specs["rest_batch"], BATCH_SIZE)
            ],
            0,
        ),
    }
    result: dict[str, Any] = {}
    for mode, (calls, single) in plans.items():
        limit = SINGLES_IN_FLIGHT if single else BATCHES_IN_FLIGHT
        started = time.perf_counter()
        await bounded(calls, limit)
        elapsed = time.perf_counter() - started
        count = len(specs[mode])
        result[mode] = {"tasks": count, "tasks_per_second": round(count / elapsed, 1)}
    return result


async def probe(ledger: BenchmarkLedger, runs: int) -> dict[str, Any]:
    """The best claim-then-complete rate of bare rows over batch sizes, then a full pass."""
    trials: list[ProbeResult] = []
    sizes = [batch for batch in PROBE_BATCHES if batch <= runs] or [PROBE_BATCHES[0]]
    for batch in sizes:
        rows = max(batch, min(runs, PROBE_TRIAL_ROWS, batch * 200))
        trials.append(await ledger.probe(batch, rows))
    best = max(trials, key=lambda trial: trial.rows_per_second)
    final = await ledger.probe(best.batch, runs)
    return {
        "best_batch": best.batch,
        "rows": runs,
        "rows_per_second": round(final.rows_per_second, 1),
        "trials": {str(t.batch): round(t.rows_per_second, 1) for t in trials},
    }
