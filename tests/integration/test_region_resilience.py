"""The region when things go wrong or end: the ledger going away, and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from sqlalchemy.engine import make_url
from test_region_harness import (
    FakeWorker,
    claim,
    connected,
    eventually,
    run_state,
    running_region,
    task,
)

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import RegionState, RunState
from taskmesh.common.rpc import region_pb2

QUIET = 1.0  # seconds to wait for something that must not happen


class TcpProxy:
    """Forwards a local port to PostgreSQL; ``cut`` breaks every connection and refuses new ones."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        """Listen (on the same port again after a cut)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening and reset every open connection."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Pipe one client connection to the target and back."""
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy bytes until either side goes away."""
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._writers.discard(writer)


@contextlib.asynccontextmanager
async def proxied(database_url: str) -> AsyncIterator[tuple[TcpProxy, str]]:
    """A proxy in front of the test's database, and the URL that goes through it."""
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    try:
        yield proxy, url.set(port=proxy.port).render_as_string(hide_password=False)
    finally:
        await proxy.cut()


async def test_the_writer_keeps_results_while_the_ledger_is_away(
    database_url: str, ledger: Ledger
) -> None:
    (run,) = await claim(ledger, task())
    async with (
        proxied(database_url) as (proxy, url),
        running_region(url) as region,
        connected(region, "w1") as worker,
    ):
        await region.delegate([run])
        (assignment,) = await worker.assigned(1)
        await worker.start(assignment.run)
        await run_state(ledger, run.run_id, RunState.RUNNING)
        await proxy.cut()
        await worker.finish(assignment.run, RunState.SUCCEEDED)
        await asyncio.sleep(QUIET)
        assert worker.acked() == set()  # not in the ledger, so not acked
        assert (await ledger.get_run(run.run_id)).state is RunState.RUNNING
        await proxy.start()
        await worker.wait_for(lambda m: m.WhichOneof("body") == "ack")
        assert (await ledger.get_run(run.run_id)).state is RunState.SUCCEEDED


async def test_shutdown_hands_the_queue_back_and_lets_workers_finish(
    database_url: str, ledger: Ledger
) -> None:
    running, *queued = await claim(ledger, task("running"), task("q1"), task("q2"))
    (late,) = await claim(ledger, task("late"))
    async with running_region(database_url) as region:
        worker = FakeWorker(region.address, "w1", slots=1)
        await worker.connect()
        await region.delegate([running, *queued])
        (assignment,) = await worker.assigned(1)
        await worker.start(assignment.run)
        region.handle.request_shutdown()
        drain = await worker.wait_for(lambda m: m.WhichOneof("body") == "drain")
        assert drain.drain.grace.ToTimedelta() == timedelta(seconds=5)
        for run in queued:
            await run_state(ledger, run.run_id, RunState.PENDING)
        refused = (await region.delegate([late])).refused
        assert [r.reason for r in refused] == [region_pb2.REFUSAL_REASON_DRAINING]
        await worker.finish(assignment.run, RunState.SUCCEEDED)
        await worker.wait_for(lambda m: m.WhichOneof("body") == "ack")
        await worker.close()
        await asyncio.wait_for(region.task, 15)
        await worker.drop()
    assert (await ledger.get_run(running.run_id)).state is RunState.SUCCEEDED
    (row,) = await ledger.list_regions()
    assert row.state is RegionState.DOWN  # everything was handed back


async def test_shutdown_marks_runs_still_running_at_the_deadline_lost(
    database_url: str, ledger: Ledger
) -> None:
    (run,) = await claim(ledger, task())
    async with running_region(database_url, shutdown_timeout=timedelta(seconds=1)) as region:
        worker = FakeWorker(region.address, "w1")
        await worker.connect()
        await region.delegate([run])
        (assignment,) = await worker.assigned(1)
        await worker.start(assignment.run)
        await run_state(ledger, run.run_id, RunState.RUNNING)
        await region.stop()
        await worker.drop()
    lost = await eventually(lambda: ledger.get_run(run.run_id), lambda r: r.state.is_terminal)
    assert lost.state is RunState.LOST
