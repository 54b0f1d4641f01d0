"""The dashboard's routes on the master's aiohttp application.

The page itself is plain HTML, CSS and JavaScript modules shipped in ``static/`` (no build step,
no CDN). Besides the ``/v1/tasks`` and ``/v1/workflows`` routes it reads three endpoints added
here: ``GET /v1/cluster`` (the overview), ``GET /v1/activity`` (throughput and pickup latency
of the last minutes) and ``GET /v1/events/stream`` (live run events, SSE).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from taskmesh.master.clock import Clock, utc_now
from taskmesh.master.dashboard.event_stream import EventStream
from taskmesh.master.dashboard.overview import cluster_activity, cluster_overview
from taskmesh.master.task_api import TaskApi

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/dashboard/static"


class Dashboard:
    """Serves the dashboard page and its data over a ``TaskApi``."""

    def __init__(self, api: TaskApi, *, clock: Clock = utc_now) -> None:
        """Read everything from ``api``; ``clock`` dates the overview (heartbeat ages)."""
        self._api = api
        self._clock = clock
        self._events = EventStream(api)

    def install(self, app: web.Application) -> None:
        """Add the routes to ``app``; open event streams end when the app shuts down."""
        router = app.router
        router.add_get("/", self.index)
        router.add_static(STATIC_PREFIX, STATIC_DIR)
        router.add_get("/v1/cluster", self.cluster)
        router.add_get("/v1/activity", self.activity)
        router.add_get("/v1/events/stream", self._events.handle)
        app.on_shutdown.append(self._events.close)

    async def index(self, request: web.Request) -> web.FileResponse:
        """The dashboard page."""
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def cluster(self, request: web.Request) -> web.Response:
        """Regions with their workers, and how many recent tasks are in each state."""
        return web.json_response(await cluster_overview(self._api, self._clock()))

    async def activity(self, request: web.Request) -> web.Response:
        """Attempts ended and pickup latency per 10 s over the last 15 minutes."""
        return web.json_response(await cluster_activity(self._api, self._clock()))
