"""Simulated workers: many real worker engines in this process, each on its own stream.

A simulated worker is the worker's own protocol code (``worker.engine.WorkerEngine``: region
link, foreman, slots, outbox) without the process around it (no probes, no health service, no
orphan guard), executing only ``noop`` runs: it registers, heartbeats, takes assignments,
reports them started and succeeded, and drops results once the region acknowledges them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta

from taskmesh.bench.load import BenchmarkError
from taskmesh.common.model import Executor
from taskmesh.worker.engine import WorkerEngine
from taskmesh.worker.region_link import LinkState
from taskmesh.worker.settings import WorkerSettings

CONNECT_TIMEOUT = 300.0  # for every simulated worker to be welcomed: catches a hang only
CLOSE_TIMEOUT = 5.0
POLL_INTERVAL = 0.2


def fleet_settings(
    addresses: Mapping[str, str], per_region: int, slots: int
) -> list[WorkerSettings]:
    """``per_region`` noop-only workers for each region at its gRPC address."""
    return [
        WorkerSettings(
            region=region,
            region_address=address,
            worker_id=f"sim-{region}-{index}",
            slots=slots,
            executors=(Executor.NOOP,),
            shutdown_timeout=timedelta(seconds=CLOSE_TIMEOUT),
        )
        for region, address in addresses.items()
        for index in range(1, per_region + 1)
    ]


async def _serve(engine: WorkerEngine, stop: asyncio.Event) -> None:
    """Keep one simulated worker's stream up until ``stop``; then close it."""
    async with engine.slots:
        link = asyncio.create_task(engine.link.run(), name="simulated-worker-link")
        await stop.wait()
        engine.link.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(link), CLOSE_TIMEOUT)
        link.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await link


async def _connected(engines: list[WorkerEngine]) -> None:
    """Return once every engine's stream has been welcomed by its region."""
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        waiting = sum(engine.link.state is not LinkState.CONNECTED for engine in engines)
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{waiting} simulated workers found no region within bounds")
        await asyncio.sleep(POLL_INTERVAL)


@contextlib.asynccontextmanager
async def simulated_workers(
    addresses: Mapping[str, str], per_region: int, slots: int
) -> AsyncIterator[int]:
    """``per_region`` simulated workers connected to each region for the block; yields how many."""
    stop = asyncio.Event()
    engines = [
        WorkerEngine(settings, drain=lambda _reason, _grace: None)
        for settings in fleet_settings(addresses, per_region, slots)
    ]
    async with asyncio.TaskGroup() as tasks:
        for engine in engines:
            tasks.create_task(_serve(engine, stop), name="simulated-worker")
        try:
            await _connected(engines)
            yield len(engines)
        finally:
            stop.set()
