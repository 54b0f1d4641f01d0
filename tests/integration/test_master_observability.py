"""What the master tells operators: ``/readyz`` components and ``/metrics`` values.

A real ``Master`` (real ledger, real listeners) with scripted regions; metric values are read
from the Prometheus text of ``/metrics`` and must move when runs are really dispatched.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import aiohttp
import grpc
from prometheus_client.parser import text_string_to_metric_families
from test_master_harness import eventually, fake_regions, make_topology, running_master

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import Placement, RunState, TaskSpec

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def get(url: str) -> tuple[int, str]:
    """Status and body text of a GET."""
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


async def scrape(base: str) -> Samples:
    """Every sample of ``/metrics``, by (name, sorted labels)."""
    status, text = await get(f"{base}/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when absent."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def submit(ledger: Ledger, count: int, **fields: Any) -> None:
    """``count`` tasks due now."""
    for index in range(count):
        spec = TaskSpec(name=f"t{index}", command="true", **fields)
        await ledger.submit_task(spec, datetime.now(UTC))


async def test_count_runs_is_exact_by_state_and_region(ledger: Ledger) -> None:
    await submit(ledger, 2, region="eu", placement=Placement.STRICT)
    await submit(ledger, 1)
    await ledger.claim_due_runs({"eu": 1}, datetime.now(UTC))
    counts = await ledger.count_runs()
    assert counts[(RunState.DELEGATED, "eu")] == 1
    assert counts[(RunState.PENDING, "eu")] == 1
    assert counts[(RunState.PENDING, None)] == 1
    assert sum(counts.values()) == 3


async def test_metrics_count_dispatched_runs(ledger: Ledger) -> None:
    async with (
        fake_regions("eu", "us") as regions,
        running_master(make_topology(), ledger, regions) as master,
    ):
        before = await scrape(master.http)
        assert sample(before, "taskmesh_runs", state="pending", region="") == 0
        assert sample(before, "taskmesh_master_ledger_up") == 1
        await submit(ledger, 3, region="eu", placement=Placement.STRICT)
        await eventually(lambda: len(regions["eu"].delegated) == 3)
        after = await scrape(master.http)
    assert sample(after, "taskmesh_runs", state="delegated", region="eu") == 3
    assert sample(after, "taskmesh_master_dispatch_latency_seconds_count", region="eu") == 3
    assert sample(after, "taskmesh_master_dispatch_latency_seconds_count", region="us") == 0
    assert sample(after, "taskmesh_master_delegation_batch_size_sum", region="eu") == 3
    for region in ("eu", "us"):
        assert (
            sample(after, "taskmesh_master_region_breaker_state", region=region, state="closed")
            == 1
        )
        assert (
            sample(after, "taskmesh_master_region_breaker_state", region=region, state="open") == 0
        )
    assert sample(after, "taskmesh_master_region_credit", region="us") == 100


async def test_readyz_shows_an_open_breaker_and_names_the_phase_while_draining(
    ledger: Ledger,
) -> None:
    topology = make_topology(("eu",), fail_max=2, attempts=2)
    async with (
        fake_regions("eu") as regions,
        running_master(topology, ledger, regions) as master,
    ):
        regions["eu"].fail_with = grpc.StatusCode.UNAVAILABLE
        await submit(ledger, 1, region="eu", placement=Placement.STRICT)
        await eventually(lambda: master.master.regions.get("eu").breaker_state == "open")
        open_status, open_body = await get(f"{master.http}/readyz")
        samples = await scrape(master.http)
        regions["eu"].fail_with = None
        regions["eu"].delay = 3.0  # the round in flight holds the drain open
        calls = regions["eu"].incoming
        master.master.regions.get("eu").breaker.circuit.close()
        await submit(ledger, 1, region="eu", placement=Placement.STRICT)
        await eventually(lambda: regions["eu"].incoming > calls)  # a Delegate is in flight
        master.master.stop()
        draining_status, draining_body = await get(f"{master.http}/readyz")
    assert open_status == 200, open_body  # regions do not decide the master's readiness
    assert json.loads(open_body)["components"]["regions"]["eu"]["breaker"] == "open"
    assert sample(samples, "taskmesh_master_region_breaker_state", region="eu", state="open") == 1
    assert draining_status == 503
    body = json.loads(draining_body)
    assert body["failing"] == ["phase"]
    assert body["components"]["phase"] == {"ok": False, "phase": "draining"}
