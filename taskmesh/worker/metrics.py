"""The worker's Prometheus metrics, in a registry of its own (several workers fit one process).

Finished runs are counted as they end; slots, the region link and the outbox are read from the
worker at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from taskmesh.common.model import RunState


@dataclass(frozen=True, slots=True)
class WorkerFigures:
    """What the worker's gauges show, read at scrape time."""

    slots: int
    slots_in_use: int
    link_up: bool
    outbox: int


class WorkerMetrics:
    """The metrics of one worker."""

    def __init__(
        self,
        worker_id: str,
        figures: Callable[[], WorkerFigures],
        registry: CollectorRegistry | None = None,
    ) -> None:
        """Register every metric in ``registry`` (a new one by default)."""
        self.worker_id = worker_id
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._finished = Counter(
            "taskmesh_worker_runs_finished",
            "Runs that ended on this worker, by final state.",
            ["worker", "state"],
            registry=self.registry,
        )
        self.registry.register(FiguresCollector(worker_id, figures))

    def count_finished(self, state: RunState) -> None:
        """A run ended in ``state``."""
        self._finished.labels(self.worker_id, state.value).inc()


class FiguresCollector(Collector):
    """Slots, link and outbox gauges of one worker."""

    def __init__(self, worker_id: str, figures: Callable[[], WorkerFigures]) -> None:
        self._worker_id = worker_id
        self._figures = figures

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One gauge per figure, labelled with the worker."""
        figures = self._figures()
        values = {
            "taskmesh_worker_slots": ("Slots of this worker.", figures.slots),
            "taskmesh_worker_slots_in_use": ("Slots running a command.", figures.slots_in_use),
            "taskmesh_worker_region_link_up": (
                "1 while the stream to the region is connected.",
                int(figures.link_up),
            ),
            "taskmesh_worker_outbox": ("Results not yet acknowledged.", figures.outbox),
        }
        for name, (documentation, value) in values.items():
            gauge = GaugeMetricFamily(name, documentation, labels=["worker"])
            gauge.add_metric([self._worker_id], value)
            yield gauge
