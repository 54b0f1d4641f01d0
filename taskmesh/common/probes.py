"""What every daemon serves over HTTP for operators: ``/healthz``, ``/readyz`` and ``/metrics``.

``/healthz`` says the process answers. ``/readyz`` answers one JSON object per daemon,
``{"daemon", "ready", "failing", "components"}``: each component (the ledger, a link, the stream,
workers, slots ...) says whether it is ``ok`` and shows its figures; 200 when every component
is ok, 503 naming the failing ones otherwise. ``/metrics`` is the Prometheus text of the
daemon's own registry (never the process-wide default one, so one process can hold several
daemons), refreshed first when a figure needs an await (the master's run counts).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from taskmesh.common.topology import Address


@dataclass(frozen=True, slots=True)
class Component:
    """One part of a daemon that must work for it to be ready, and its figures."""

    name: str
    ok: bool
    detail: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Readiness:
    """A daemon's readiness: ready when every component is ok."""

    daemon: str
    components: Sequence[Component]

    @property
    def failing(self) -> list[str]:
        """The names of the components that are not ok."""
        return [component.name for component in self.components if not component.ok]

    @property
    def ready(self) -> bool:
        """True when no component fails."""
        return not self.failing

    def body(self) -> dict[str, object]:
        """The JSON body of ``/readyz``."""
        return {
            "daemon": self.daemon,
            "ready": self.ready,
            "failing": self.failing,
            "components": {c.name: {"ok": c.ok, **c.detail} for c in self.components},
        }


ReadinessSource = Callable[[], Awaitable[Readiness]]
Refresh = Callable[[], Awaitable[None]]


async def _nothing_to_refresh() -> None:
    """Every figure is read at scrape time by the registry's collectors."""


class Probes:
    """The three operator routes of one daemon."""

    def __init__(
        self,
        readiness: ReadinessSource,
        registry: CollectorRegistry,
        refresh: Refresh = _nothing_to_refresh,
    ) -> None:
        """Answer ``/readyz`` from ``readiness`` and ``/metrics`` from ``registry``."""
        self._readiness = readiness
        self._registry = registry
        self._refresh = refresh

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Add ``/healthz``, ``/readyz`` and ``/metrics`` to ``router``."""
        router.add_get("/healthz", self.healthz)
        router.add_get("/readyz", self.readyz)
        router.add_get("/metrics", self.metrics)

    async def healthz(self, _request: web.Request) -> web.Response:
        """Alive: the event loop answers."""
        return web.json_response({"status": "alive"})

    async def readyz(self, _request: web.Request) -> web.Response:
        """The readiness report; 200 when ready, 503 naming what fails."""
        readiness = await self._readiness()
        return web.json_response(readiness.body(), status=200 if readiness.ready else 503)

    async def metrics(self, _request: web.Request) -> web.Response:
        """Prometheus text format."""
        await self._refresh()
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


class ProbeServer:
    """An aiohttp server serving only the probes (regions, workers); port 0 picks a free port."""

    def __init__(self, address: Address, probes: Probes) -> None:
        """Serve ``probes`` on ``address`` once started."""
        self._requested = address
        self._probes = probes
        self._runner: web.AppRunner | None = None
        self.address = address

    async def start(self) -> Address:
        """Listen; returns the bound address."""
        app = web.Application()
        self._probes.add_routes(app.router)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._requested.host, self._requested.port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.address = self._requested.with_port(int(runner.addresses[0][1]))
        return self.address

    async def stop(self) -> None:
        """Stop listening; idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
