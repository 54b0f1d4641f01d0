"""The probe server of regions and workers: plain HTTP/1.1 on asyncio, three GET routes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from taskmesh.common.probes import Component, Probes, ProbeServer, Readiness
from taskmesh.common.topology import Address

pytestmark = pytest.mark.asyncio


class Switch:
    """A readiness source the test turns on and off."""

    def __init__(self) -> None:
        self.ok = True

    async def __call__(self) -> Readiness:
        return Readiness("worker", [Component("link", self.ok, {"state": "x"})])


@pytest.fixture
async def served() -> AsyncIterator[tuple[ProbeServer, Switch]]:
    registry = CollectorRegistry()
    Counter("probe_test_total", "A counter.", registry=registry).inc(3)
    switch = Switch()
    server = ProbeServer(Address("127.0.0.1", 0), Probes(switch, registry))
    await server.start()
    yield server, switch
    await server.stop()


async def exchange(server: ProbeServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the whole response: status, headers (lower-case), body."""
    reader, writer = await asyncio.open_connection(server.address.host, server.address.port)
    writer.write(request)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    assert int(headers["content-length"]) == len(body) or request.startswith(b"HEAD")
    return int(status_line.split(" ")[1]), headers, body


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


async def test_healthz_and_readyz_answer_json(served: tuple[ProbeServer, Switch]) -> None:
    server, switch = served
    status, headers, body = await exchange(server, get("/healthz"))
    assert (status, json.loads(body)) == (200, {"status": "alive"})
    assert headers["content-type"].startswith("application/json")
    status, _, body = await exchange(server, get("/readyz?verbose=1"))
    assert status == 200
    assert json.loads(body)["ready"] is True
    switch.ok = False
    status, _, body = await exchange(server, get("/readyz"))
    assert status == 503
    assert json.loads(body)["failing"] == ["link"]


async def test_metrics_are_prometheus_text(served: tuple[ProbeServer, Switch]) -> None:
    server, _ = served
    status, headers, body = await exchange(server, get("/metrics"))
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=")
    assert b"probe_test_total 3.0" in body


async def test_head_sends_no_body(served: tuple[ProbeServer, Switch]) -> None:
    server, _ = served
    status, headers, body = await exchange(server, get("/healthz", "HEAD"))
    assert status == 200
    assert body == b""
    assert int(headers["content-length"]) > 0


async def test_bad_requests_get_a_status_naming_the_routes(
    served: tuple[ProbeServer, Switch],
) -> None:
    server, _ = served
    status, _, body = await exchange(server, get("/nope"))
    assert status == 404
    assert b"GET /healthz, /readyz, /metrics" in body
    status, headers, _ = await exchange(server, get("/healthz", "POST"))
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    status, _, _ = await exchange(server, b"garbage\r\n\r\n")
    assert status == 400
    status, _, _ = await exchange(server, b"GET / HTTP/1.1\r\nX: " + b"y" * 10_000 + b"\r\n\r\n")
    assert status == 431


async def test_stop_ends_a_client_that_never_sends(served: tuple[ProbeServer, Switch]) -> None:
    server, _ = served
    reader, writer = await asyncio.open_connection(server.address.host, server.address.port)
    writer.write(b"GET /healthz HTTP/1.1\r\n")  # never finished
    await asyncio.wait_for(server.stop(), 30)
    with contextlib.suppress(ConnectionResetError):  # an abort may reset rather than close
        assert await asyncio.wait_for(reader.read(), 30) == b""
    writer.close()
