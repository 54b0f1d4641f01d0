"""What every daemon serves over HTTP for operators: ``/healthz``, ``/readyz`` and ``/metrics``.

``/healthz`` says the process answers. ``/readyz`` answers one JSON object per daemon,
``{"daemon", "ready", "failing", "components"}``: each component (the ledger, a link, the stream,
workers, slots ...) says whether it is ``ok`` and shows its figures; 200 when every component
is ok, 503 naming the failing ones otherwise. ``/metrics`` is the Prometheus text of the
daemon's own registry (never the process-wide default one, so one process can hold several
daemons), refreshed first when a figure needs an await (the master's run counts).

Regions and workers serve only these three routes, so their ``ProbeServer`` is a few lines of
HTTP/1.1 on asyncio's streams (one GET per connection) rather than aiohttp: aiohttp with its
dependencies is ~8 MiB of a worker's ~60 MiB resident memory, and workers are many. The master
mounts the same answers on its aiohttp application (``taskmesh.master.rest``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus

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


JSON = "application/json; charset=utf-8"
REQUEST_HEAD_LIMIT = 8 * 1024  # bytes of request line and headers a probe request may send
REQUEST_TIMEOUT = 10.0  # seconds a client has to send its request head


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    """One probe's HTTP answer, whatever server sends it."""

    status: int
    content_type: str
    body: bytes


def _json_answer(body: object, status: int = 200) -> ProbeAnswer:
    return ProbeAnswer(status, JSON, json.dumps(body).encode())


class Probes:
    """The three operator routes of one daemon."""

    PATHS = ("/healthz", "/readyz", "/metrics")

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

    async def answer(self, path: str) -> ProbeAnswer | None:
        """The answer to ``GET path``; None for a path that is not a probe."""
        if path == "/healthz":
            return await self.healthz()
        if path == "/readyz":
            return await self.readyz()
        if path == "/metrics":
            return await self.metrics()
        return None

    async def healthz(self) -> ProbeAnswer:
        """Alive: the event loop answers."""
        return _json_answer({"status": "alive"})

    async def readyz(self) -> ProbeAnswer:
        """The readiness report; 200 when ready, 503 naming what fails."""
        readiness = await self._readiness()
        return _json_answer(readiness.body(), 200 if readiness.ready else 503)

    async def metrics(self) -> ProbeAnswer:
        """Prometheus text format."""
        await self._refresh()
        return ProbeAnswer(200, CONTENT_TYPE_LATEST, generate_latest(self._registry))


class ProbeServer:
    """Serves only the probes (regions, workers) over HTTP/1.1; port 0 picks a free port.

    One request per connection (``Connection: close``), ``GET`` and ``HEAD`` only; a request
    head over 8 KiB or slower than 10 s is refused. That is all a scraper or a load balancer
    health check needs.
    """

    def __init__(self, address: Address, probes: Probes) -> None:
        """Serve ``probes`` on ``address`` once started."""
        self._requested = address
        self._probes = probes
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.address = address

    async def start(self) -> Address:
        """Listen; returns the bound address."""
        server = await asyncio.start_server(
            self._accept, self._requested.host, self._requested.port, limit=REQUEST_HEAD_LIMIT
        )
        self._server = server
        self.address = self._requested.with_port(int(server.sockets[0].getsockname()[1]))
        return self.address

    async def stop(self) -> None:
        """Stop listening and end the requests in progress; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Aborting the sockets ends each handler's read (no cancel: asyncio would log the
        # cancelled handler task as an error).
        for writer in self._connections.values():
            writer.transport.abort()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            answer, head_only = await self._respond(reader)
            writer.write(_response_bytes(answer, head_only))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: nothing to answer
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[ProbeAnswer, bool]:
        """Read one request head and answer it: (the answer, whether to send its head only)."""
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            return _error(HTTPStatus.REQUEST_TIMEOUT), False
        except asyncio.LimitOverrunError:
            return _error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE), False
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _error(HTTPStatus.BAD_REQUEST), False
        method, target, _version = parts
        if method not in ("GET", "HEAD"):
            return _error(HTTPStatus.METHOD_NOT_ALLOWED), False
        answer = await self._probes.answer(target.split("?", 1)[0])
        return answer or _error(HTTPStatus.NOT_FOUND), method == "HEAD"


def _error(status: HTTPStatus) -> ProbeAnswer:
    """A plain-text error naming the probes a client may ask for."""
    text = f"{status.value} {status.phrase}: this server answers GET {', '.join(Probes.PATHS)}\n"
    return ProbeAnswer(status.value, "text/plain; charset=utf-8", text.encode())


def _response_bytes(answer: ProbeAnswer, head_only: bool) -> bytes:
    """The whole HTTP/1.1 response: status line, headers, body (none for ``HEAD``)."""
    status = HTTPStatus(answer.status)
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        f"Content-Type: {answer.content_type}\r\n"
        f"Content-Length: {len(answer.body)}\r\n"
        "Connection: close\r\n"
    )
    if status is HTTPStatus.METHOD_NOT_ALLOWED:
        head += "Allow: GET, HEAD\r\n"
    return (head + "\r\n").encode("latin-1") + (b"" if head_only else answer.body)
