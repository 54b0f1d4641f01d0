"""The region's Prometheus metrics, in a registry of its own (several regions fit one process).

Events (a run started, a ledger batch written, a stale epoch refused) are counted as they
happen; the state of the queue, the workers and the breakers is read from the runtime at
scrape time by ``RuntimeCollector``, so it is never stale and costs nothing between scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from taskmesh.region.runtime import RegionRuntime

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
BREAKER_STATES = ("closed", "open", "half-open")


def priority_band(priority: int) -> str:
    """The band a priority falls in: ``high`` (> 0), ``normal`` (0) or ``low`` (< 0)."""
    if priority > 0:
        return "high"
    return "low" if priority < 0 else "normal"


class RegionMetrics:
    """Counters and histograms the region's components feed as things happen."""

    def __init__(self, region: str, registry: CollectorRegistry | None = None) -> None:
        """Register every metric in ``registry`` (a new one by default)."""
        self.region = region
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.pickup_latency = Histogram(
            "taskmesh_region_pickup_latency_seconds",
            "From a run's due time to its process start on a worker.",
            ["region"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        ).labels(region)
        self.write_latency = Histogram(
            "taskmesh_region_ledger_write_seconds",
            "Time to write one batch of transitions to the ledger (retries included).",
            ["region"],
            buckets=WRITE_BUCKETS,
            registry=self.registry,
        ).labels(region)
        self.write_batch_size = Histogram(
            "taskmesh_region_ledger_write_batch_size",
            "Transitions per ledger write.",
            ["region"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        ).labels(region)

    def observe_started(self, due_at: datetime, started_at: datetime) -> None:
        """A run's process started: its pickup latency."""
        self.pickup_latency.observe(max(0.0, (started_at - due_at).total_seconds()))

    @contextmanager
    def timing_write(self, size: int) -> Iterator[None]:
        """Time one ledger write of ``size`` transitions."""
        began = time.perf_counter()
        yield
        self.write_latency.observe(time.perf_counter() - began)
        self.write_batch_size.observe(size)

    def watch(self, runtime: RegionRuntime) -> None:
        """Export the runtime's live state (queue, workers, slots, breakers) as gauges."""
        self.registry.register(RuntimeCollector(runtime))


def _gauge(name: str, documentation: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


class RuntimeCollector(Collector):
    """Gauges read from the region's runtime at scrape time."""

    def __init__(self, runtime: RegionRuntime) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Queue depth by band, credit, workers, slots and breaker states."""
        runtime = self._runtime
        yield from self._queue(runtime)
        yield from self._workers(runtime)
        yield from self._breakers(runtime)

    def _queue(self, runtime: RegionRuntime) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        region = runtime.name
        depth = _gauge(
            "taskmesh_region_queue_depth",
            "Runs waiting in the region's queue, by priority band.",
            ["region", "band"],
        )
        bands = dict.fromkeys(("high", "normal", "low"), 0)
        for priority, count in runtime.queue.depth_by_priority().items():
            bands[priority_band(priority)] += count
        for band, count in bands.items():
            depth.add_metric([region, band], count)
        yield depth
        credit = _gauge("taskmesh_region_credit", "Free queue room advertised.", ["region"])
        credit.add_metric([region], runtime.credit)
        yield credit
        unwritten = _gauge(
            "taskmesh_region_unwritten_transitions",
            "Transitions waiting to be written to the ledger.",
            ["region"],
        )
        unwritten.add_metric([region], runtime.writer.pending)
        yield unwritten
        stale = CounterMetricFamily(
            "taskmesh_region_stale_epoch_rejections",
            "Transitions the ledger refused because their epoch was stale (counted by the writer).",
            labels=["region"],
        )
        stale.add_metric([region], runtime.writer.stale_refusals)
        yield stale
        up = _gauge("taskmesh_region_ledger_up", "1 while ledger writes succeed.", ["region"])
        up.add_metric([region], 1.0 if runtime.writer.ledger_available else 0.0)
        yield up

    def _workers(self, runtime: RegionRuntime) -> Iterator[GaugeMetricFamily]:
        region = runtime.name
        workers = list(runtime.registry)
        draining = sum(worker.draining for worker in workers)
        count = _gauge(
            "taskmesh_region_workers", "Connected workers by state.", ["region", "state"]
        )
        count.add_metric([region, "up"], len(workers) - draining)
        count.add_metric([region, "draining"], draining)
        yield count
        slots = _gauge("taskmesh_region_slots", "Slots of the connected workers.", ["region"])
        slots.add_metric([region], sum(worker.slots for worker in workers))
        yield slots
        in_use = _gauge(
            "taskmesh_region_slots_in_use", "Runs held by the region's workers.", ["region"]
        )
        in_use.add_metric([region], runtime.registry.running)
        yield in_use
        free = _gauge("taskmesh_region_free_slots", "Slots the region may still fill.", ["region"])
        free.add_metric([region], sum(worker.credit for worker in workers))
        yield free
        if runtime.desired_workers is not None:  # only a region with autoscaling has it
            desired = _gauge(
                "taskmesh_region_desired_workers",
                "Workers the region's autoscaling wants for its load.",
                ["region"],
            )
            desired.add_metric([region], runtime.desired_workers)
            yield desired

    def _breakers(self, runtime: RegionRuntime) -> Iterator[GaugeMetricFamily]:
        region = runtime.name
        kinds = _gauge(
            "taskmesh_region_kind_breaker_state",
            "1 for the current state of each task kind's breaker.",
            ["region", "kind", "state"],
        )
        for kind, breaker in runtime.board.kinds():
            for state in BREAKER_STATES:
                kinds.add_metric([region, kind, state], float(breaker.state == state))
        yield kinds
        workers = _gauge(
            "taskmesh_region_worker_breaker_state",
            "1 for the current state of each connected worker's breaker.",
            ["region", "worker", "state"],
        )
        for worker in runtime.registry:
            current = runtime.board.worker(worker.id).state
            for state in BREAKER_STATES:
                workers.add_metric([region, worker.id, state], float(current == state))
        yield workers
