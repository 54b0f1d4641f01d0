"""The master's Prometheus metrics, in a registry of its own (several masters fit one process).

Run counts by state and region come from one exact count query per scrape (``refresh``);
dispatch latency, batch sizes and stale-epoch refusals are counted by the dispatcher as they
happen; the region links (breaker, credit) are read at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from taskmesh.common.errors import LedgerUnavailableError
from taskmesh.common.ledger import Ledger
from taskmesh.common.model import ClaimedRun, RunState, TransitionOutcome, TransitionRefusal
from taskmesh.master.region_clients import RegionClients

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
BREAKER_STATES = ("closed", "open", "half-open")
NO_REGION = ""  # the label of runs not bound to a region yet


class MasterMetrics:
    """Every metric of one master."""

    def __init__(
        self, ledger: Ledger, regions: RegionClients, registry: CollectorRegistry | None = None
    ) -> None:
        """Register every metric in ``registry`` (a new one by default)."""
        self._ledger = ledger
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._runs = Gauge(
            "taskmesh_runs",
            "Run attempts in the ledger by state and region (exact, counted at scrape time).",
            ["state", "region"],
            registry=self.registry,
        )
        self._ledger_up = Gauge(
            "taskmesh_master_ledger_up",
            "1 when the last scrape's count query answered.",
            registry=self.registry,
        )
        self._dispatch_latency = Histogram(
            "taskmesh_master_dispatch_latency_seconds",
            "From a run's due time to its delegation to a region.",
            ["region"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._batch_size = Histogram(
            "taskmesh_master_delegation_batch_size",
            "Runs per Delegate call, by region.",
            ["region"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self._stale = Counter(
            "taskmesh_master_stale_epoch_rejections",
            "Transitions of the master the ledger refused for a stale epoch.",
            registry=self.registry,
        )
        self.registry.register(RegionLinkCollector(regions))

    async def refresh(self) -> None:
        """Count the runs now (before a scrape); on an outage keep the last counts."""
        try:
            counts = await self._ledger.count_runs()
        except LedgerUnavailableError:
            self._ledger_up.set(0)
            return
        self._ledger_up.set(1)
        self._runs.clear()
        for (state, region), count in counts.items():
            self._runs.labels(str(state), region or NO_REGION).set(count)
        for state in RunState:  # every state shows, at 0 when no run is in it
            if not any(key[0] is state for key in counts):
                self._runs.labels(str(state), NO_REGION).set(0)

    def observe_delegated(self, region: str, runs: Sequence[ClaimedRun]) -> None:
        """A region accepted ``runs``: each one's dispatch latency (due → delegated)."""
        latency = self._dispatch_latency.labels(region)
        for run in runs:
            latency.observe(max(0.0, (run.delegated_at - run.due_at).total_seconds()))

    def observe_batch(self, region: str, size: int) -> None:
        """One Delegate call carried ``size`` runs."""
        self._batch_size.labels(region).observe(size)

    def count_refusals(self, outcomes: Sequence[TransitionOutcome]) -> None:
        """Count the stale-epoch refusals among ``outcomes``."""
        stale = sum(o.refusal is TransitionRefusal.STALE_EPOCH for o in outcomes)
        if stale:
            self._stale.inc(stale)


class RegionLinkCollector(Collector):
    """The master's view of each region: breaker state and last advertised credit."""

    def __init__(self, regions: RegionClients) -> None:
        self._regions = regions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Breaker state (1 for the current one) and credit per region."""
        breaker = GaugeMetricFamily(
            "taskmesh_master_region_breaker_state",
            "1 for the current state of the master's breaker towards each region.",
            labels=["region", "state"],
        )
        credit = GaugeMetricFamily(
            "taskmesh_master_region_credit",
            "The credit each region last advertised (-1 before it answered).",
            labels=["region"],
        )
        for client in self._regions:
            for state in BREAKER_STATES:
                breaker.add_metric([client.name, state], float(client.breaker_state == state))
            credit.add_metric([client.name], -1 if client.credit is None else client.credit)
        yield breaker
        yield credit
