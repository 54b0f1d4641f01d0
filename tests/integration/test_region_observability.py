"""What a region tells operators: gRPC health, ``/readyz`` components and ``/metrics`` values.

A real region (``running_region``) with a scripted worker; metric values are read from the
Prometheus text of ``/metrics`` and must move when real runs go through the region.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from test_region_harness import (
    REGION,
    WAIT,
    RunningRegion,
    claim,
    connected,
    eventually,
    ref_of,
    run_state,
    running_region,
    task,
)

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import RunState

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def scrape(region: RunningRegion) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the region's ``/metrics``, by (name, sorted labels)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://{region.handle.http_address}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """One sample's value; 0 when absent."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_follow_runs_through_the_region(database_url: str, ledger: Ledger) -> None:
    async with running_region(database_url) as region:
        before = await scrape(region)
        assert sample(before, "taskmesh_region_pickup_latency_seconds_count", region=REGION) == 0
        high, low = await claim(ledger, task("high", priority=5), task("low", priority=-3))
        await region.delegate([high, low])
        queued = await scrape(region)
        assert sample(queued, "taskmesh_region_queue_depth", region=REGION, band="high") == 1
        assert sample(queued, "taskmesh_region_queue_depth", region=REGION, band="low") == 1
        assert sample(queued, "taskmesh_region_queue_depth", region=REGION, band="normal") == 0
        async with connected(region, "w1", slots=2) as worker:
            await worker.heartbeat(free_slots=2)
            assignments = await worker.assigned(2)
            during = await scrape(region)
            assert sample(during, "taskmesh_region_workers", region=REGION, state="up") == 1
            assert sample(during, "taskmesh_region_slots", region=REGION) == 2
            assert sample(during, "taskmesh_region_slots_in_use", region=REGION) == 2
            assert (
                sample(
                    during,
                    "taskmesh_region_worker_breaker_state",
                    region=REGION,
                    worker="w1",
                    state="closed",
                )
                == 1
            )
            await worker.start(*(ref_of(a) for a in assignments))
            for assignment in assignments:
                await worker.finish(ref_of(assignment), RunState.SUCCEEDED)
            for run in (high, low):
                await run_state(ledger, run.run_id, RunState.SUCCEEDED)
            after = await eventually(
                lambda: scrape(region),
                lambda s: (
                    sample(s, "taskmesh_region_pickup_latency_seconds_count", region=REGION) == 2
                ),
            )
    assert sample(after, "taskmesh_region_queue_depth", region=REGION, band="high") == 0
    assert sample(after, "taskmesh_region_ledger_write_seconds_count", region=REGION) >= 2
    assert sample(after, "taskmesh_region_ledger_write_batch_size_sum", region=REGION) >= 6
    assert (
        sample(
            after,
            "taskmesh_region_kind_breaker_state",
            region=REGION,
            kind="default",
            state="closed",
        )
        == 1
    )
    assert (
        sample(
            after, "taskmesh_region_kind_breaker_state", region=REGION, kind="default", state="open"
        )
        == 0
    )


async def test_describe_counts_the_queue_by_priority(database_url: str, ledger: Ledger) -> None:
    async with running_region(database_url) as region:
        specs = [task(f"p{n}", priority=p) for n, p in enumerate((5, 5, 0, -3))]
        await region.delegate(await claim(ledger, *specs))
        status = await region.describe()
    assert status.queue_depth == 4
    assert dict(status.queue_depth_by_priority) == {5: 2, 0: 1, -3: 1}


async def test_grpc_health_serves_then_watch_sees_not_serving_on_shutdown(
    database_url: str,
) -> None:
    async with (
        running_region(database_url) as region,
        grpc.aio.insecure_channel(region.address) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=WAIT)
        assert answer.status == SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=WAIT)
        assert (await watch.read()).status == SERVING
        region.handle.request_shutdown()
        assert (await watch.read()).status == NOT_SERVING
        watch.cancel()
        await asyncio.wait_for(asyncio.shield(region.task), WAIT)


async def test_readyz_names_the_state_while_draining(database_url: str, ledger: Ledger) -> None:
    async with running_region(database_url) as region:
        (run,) = await claim(ledger, task("held"))
        await region.delegate([run])
        async with connected(region, "w1", slots=1) as worker:
            await worker.heartbeat(free_slots=1)
            (assignment,) = await worker.assigned(1)
            await worker.start(ref_of(assignment))
            region.handle.request_shutdown()  # the started run keeps the region draining
            url = f"http://{region.handle.http_address}/readyz"
            async with aiohttp.ClientSession() as http:

                async def readyz() -> tuple[int, dict[str, object]]:
                    async with http.get(url) as response:
                        return response.status, await response.json()

                _, body = await eventually(readyz, lambda answer: answer[0] == 503)
            await worker.finish(ref_of(assignment), RunState.SUCCEEDED)
    assert body["failing"] == ["state"]
    assert body["ready"] is False
    components: Any = body["components"]
    assert components["master"]["last_delegate_seconds_ago"] >= 0  # it delegated the run


async def test_a_stale_epoch_refusal_is_counted(database_url: str, ledger: Ledger) -> None:
    """The master reaps the region's queued run and claims it again (a newer epoch); the
    region's ``assigned`` write is refused for its stale epoch, and counted."""
    async with running_region(database_url) as region:
        (run,) = await claim(ledger, task("reaped"))
        await region.delegate([run])
        await ledger.reap_region(REGION, datetime.now(UTC))
        await ledger.claim_due_runs({REGION: 1}, datetime.now(UTC))  # a newer epoch
        async with connected(region, "w1", slots=1) as worker:
            await worker.heartbeat(free_slots=1)
            after = await eventually(
                lambda: scrape(region),
                lambda s: (
                    sample(s, "taskmesh_region_stale_epoch_rejections_total", region=REGION) >= 1
                ),
            )
            assert worker.assignments() == []  # fenced off before it was sent
    assert sample(after, "taskmesh_region_stale_epoch_rejections_total", region=REGION) == 1
