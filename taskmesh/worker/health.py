"""The worker's HTTP endpoint: ``/healthz`` (the process is alive) and ``/readyz`` (its state).

``/readyz`` answers 200 when the worker takes work (its region stream is up and it is not
draining), else 503, with the status as JSON either way so an operator sees why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from aiohttp import web

from taskmesh.common.topology import Address

logger = logging.getLogger(__name__)

StatusSource = Callable[[], Mapping[str, object]]


class HealthServer:
    """Serves the health endpoints on ``address``; port 0 binds a free port, see ``port``."""

    def __init__(self, address: Address, status: StatusSource) -> None:
        self._address = address
        self._status = status
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port actually bound."""
        if self._port is None:
            raise RuntimeError("the health server is not started")
        return self._port

    async def start(self) -> None:
        """Bind the address and start serving."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._address.host, self._address.port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        logger.info("serving /healthz and /readyz on %s", self._address.with_port(self._port))

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _healthz(self, _request: web.Request) -> web.Response:
        """Alive: the event loop answers."""
        return web.json_response({"status": "alive"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        """The worker's status; 200 when it takes work, 503 when it does not."""
        status = self._status()
        return web.json_response(status, status=200 if status.get("ready") else 503)
