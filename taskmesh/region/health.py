"""The region's HTTP endpoints: ``/healthz`` (alive), ``/readyz`` (taking work), ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from taskmesh.common.topology import Address

Report = Callable[[], dict[str, object]]

GAUGES = {  # readiness field → (metric name, help)
    "queue_depth": ("taskmesh_region_queue_depth", "Runs waiting in the region's queue."),
    "credit": ("taskmesh_region_credit", "Free queue room the region advertises."),
    "running": ("taskmesh_region_running_runs", "Runs held by the region's workers."),
    "workers_connected": ("taskmesh_region_workers", "Workers connected to the region."),
    "free_slots": ("taskmesh_region_free_slots", "Free worker slots the region may fill."),
    "unwritten_transitions": (
        "taskmesh_region_unwritten_transitions",
        "Transitions waiting to be written to the ledger.",
    ),
    "desired_workers": (
        "taskmesh_region_desired_workers",
        "Workers the region's autoscaling wants for its load (absent without autoscaling).",
    ),
}


class ReportCollector(Collector):
    """Exposes the readiness report's figures as gauges, read at scrape time."""

    def __init__(self, report: Report) -> None:
        self._report = report

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One gauge per figure, labelled with the region."""
        report = self._report()
        region = str(report["region"])
        for field, (name, documentation) in GAUGES.items():
            value = report[field]
            if value is None:  # a figure this region does not have
                continue
            gauge = GaugeMetricFamily(name, documentation, labels=["region"])
            gauge.add_metric([region], float(value) if isinstance(value, int | float) else 0.0)
            yield gauge
        up = GaugeMetricFamily("taskmesh_region_ledger_up", "1 when the ledger answers.")
        up.add_metric([], 1.0 if report["ledger_reachable"] else 0.0)
        yield up


class HealthServer:
    """An aiohttp server on one address; port 0 picks a free port, see ``address``."""

    def __init__(self, address: Address, report: Report) -> None:
        self._requested = address
        self._report = report
        self._metrics = CollectorRegistry(auto_describe=True)
        self._metrics.register(ReportCollector(report))
        self._runner: web.AppRunner | None = None
        self.address = address

    async def start(self) -> Address:
        """Listen; returns the bound address."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._requested.host, self._requested.port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.address = self._requested.with_port(int(port))
        return self.address

    async def stop(self) -> None:
        """Stop listening; idempotent."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        """200 while the event loop answers."""
        return web.json_response({"status": "ok", **self._report()})

    async def _readyz(self, request: web.Request) -> web.Response:
        """200 when the region takes work (ledger reachable, not draining), else 503."""
        report = self._report()
        return web.json_response(report, status=200 if report["ready"] else 503)

    async def _metrics_page(self, request: web.Request) -> web.Response:
        """Prometheus text format."""
        body = generate_latest(self._metrics)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
