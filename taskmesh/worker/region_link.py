"""The worker's one ``WorkerLink.Connect`` stream to its region, kept up for the worker's life.

Each connection: a fresh channel; ``register`` first; wait for ``welcome``; then one task reads
region messages (handed to the ``RegionHandler`` in order) while another writes, in this order
on every wake-up: the ``draining`` announcement (once per stream), the starts and the results
gathered since the last write, then a heartbeat when one is due. After ``welcome`` the whole
outbox is re-sent. Starts gathered while no stream was up are dropped: ``register.running``
names the runs still running, and a result carries its own ``started_at``.

A dropped stream or an unreachable region is retried forever (``reconnect_backoff``); the runs
keep running meanwhile. ``close`` half-closes the stream (``done_writing``) and waits up to
``CLOSE_GRACE`` for the region to end its side before the channel goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Protocol

import grpc

from taskmesh.common.retry_policies import Backoff, reconnect_backoff
from taskmesh.common.rpc import region_pb2, region_pb2_grpc
from taskmesh.common.rpc.limits import message_size_options
from taskmesh.common.rpc.tls import aio_channel
from taskmesh.common.topology import TlsConfig
from taskmesh.worker.messages import (
    RunKey,
    draining_message,
    results_messages,
    started_message,
)
from taskmesh.worker.outbox import Outbox

logger = logging.getLogger(__name__)

Call = grpc.aio.StreamStreamCall[region_pb2.WorkerMessage, region_pb2.RegionMessage]

CLOSE_GRACE = timedelta(seconds=2)  # for the region to end the stream after the worker's side


class LinkState(enum.StrEnum):
    """Whether the worker has a welcomed stream to its region right now."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class LinkError(Exception):
    """The region broke the stream's protocol (no welcome, or something else first)."""


class RegionHandler(Protocol):
    """What the link asks of the worker: who it is, how it is doing, and what to do."""

    def registration(self) -> region_pb2.WorkerMessage:
        """The ``register`` message that opens a stream."""
        ...

    def heartbeat(self) -> region_pb2.WorkerMessage:
        """A ``heartbeat`` message with the worker's state now."""
        ...

    def handle(self, message: region_pb2.RegionMessage) -> None:
        """Act on one message from the region (``welcome`` included)."""
        ...


class RegionLink:
    """Keeps one stream to the region at ``address`` and carries messages both ways."""

    def __init__(
        self,
        address: str,
        handler: RegionHandler,
        outbox: Outbox,
        *,
        heartbeat_interval: timedelta,
        backoff: Backoff | None = None,
        welcome_timeout: timedelta = timedelta(seconds=10),
        tls: TlsConfig | None = None,
    ) -> None:
        self.address = address
        self._tls = tls
        self._handler = handler
        self._outbox = outbox
        self._default_interval = heartbeat_interval.total_seconds()
        self._interval = self._default_interval
        self._backoff = backoff or reconnect_backoff()
        self._welcome_timeout = welcome_timeout.total_seconds()
        self._started: list[tuple[RunKey, datetime]] = []
        self._draining: region_pb2.WorkerMessage | None = None
        self._draining_sent = False
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self.state = LinkState.DISCONNECTED
        self.connections = 0  # streams welcomed so far

    def report_started(self, key: RunKey, at: datetime) -> None:
        """Queue a ``started`` for the next write."""
        self._started.append((key, at))
        self._wake.set()

    def announce_draining(self, reason: str, grace: timedelta) -> None:
        """Send ``draining`` now and on every later stream."""
        self._draining = draining_message(reason, grace)
        self._draining_sent = False
        self._wake.set()

    def wake(self) -> None:
        """Write what is pending (e.g. new results in the outbox) without waiting."""
        self._wake.set()

    def close(self) -> None:
        """Half-close the current stream after a last write, and stop reconnecting."""
        self._closing.set()
        self._wake.set()

    async def run(self) -> None:
        """Connect, exchange messages, and reconnect after every failure, until ``close``."""
        while not self._closing.is_set():
            try:
                await self._connect()
            except (grpc.aio.AioRpcError, LinkError) as error:
                self._log_failure(error)
            except Exception:  # a bug in handling a message: reset the stream, keep the runs
                logger.exception("the stream to region at %s failed", self.address)
            finally:
                self.state = LinkState.DISCONNECTED
            await self._pause()
        logger.info("closed the stream to region at %s", self.address)

    async def _connect(self) -> None:
        """One stream, from ``register`` to its end."""
        async with aio_channel(self.address, self._tls, message_size_options()) as channel:
            call = region_pb2_grpc.WorkerLinkStub(channel).Connect()
            self._started.clear()
            self._outbox.resend_all()
            self._draining_sent = False
            await call.write(self._handler.registration())
            welcome = await self._receive_welcome(call)
            self._welcomed(welcome.welcome)
            self._handler.handle(welcome)
            await self._exchange(call)

    async def _receive_welcome(self, call: Call) -> region_pb2.RegionMessage:
        """The region's first message, which must be a ``welcome``."""
        try:
            async with asyncio.timeout(self._welcome_timeout):
                message = await call.read()
        except TimeoutError:
            raise LinkError(f"no welcome within {self._welcome_timeout:g} s") from None
        if not isinstance(message, region_pb2.RegionMessage):
            raise LinkError("the region closed the stream before its welcome")
        kind = message.WhichOneof("body")
        if kind != "welcome":
            raise LinkError(f"the region's first message was {kind!r}, expected 'welcome'")
        return message

    def _welcomed(self, welcome: region_pb2.WorkerWelcome) -> None:
        """Take the region's heartbeat interval and count the stream as up."""
        interval = welcome.heartbeat_interval.ToTimedelta().total_seconds()
        self._interval = interval if interval > 0 else self._default_interval
        self.state = LinkState.CONNECTED
        self.connections += 1
        self._backoff.reset()
        logger.info(
            "connected to region %s at %s (heartbeat every %g s, %d results to re-send)",
            welcome.region,
            self.address,
            self._interval,
            len(self._outbox),
        )

    async def _exchange(self, call: Call) -> None:
        """Read and write concurrently until either side ends; re-raise a stream error."""
        receiver = asyncio.create_task(self._receive(call), name="region-link-receive")
        sender = asyncio.create_task(self._send(call), name="region-link-send")
        try:
            done, _ = await asyncio.wait((receiver, sender), return_when=asyncio.FIRST_COMPLETED)
            if sender in done and self._closing.is_set():
                # Half-closed: cancelling now could discard what was written last (draining,
                # results); the region reads it all, then ends its side.
                await asyncio.wait((receiver,), timeout=CLOSE_GRACE.total_seconds())
        finally:
            for task in (receiver, sender):
                task.cancel()
            await asyncio.gather(receiver, sender, return_exceptions=True)
        if not self._closing.is_set():  # an error while half-closing changes nothing
            for task in done:
                task.result()

    async def _receive(self, call: Call) -> None:
        """Hand every region message to the handler, in order, until the region ends."""
        while True:
            message = await call.read()
            if not isinstance(message, region_pb2.RegionMessage):
                raise LinkError("the region ended the stream")
            self._handler.handle(message)

    async def _send(self, call: Call) -> None:
        """Write pending messages as they come and heartbeats on time; half-close on ``close``."""
        loop = asyncio.get_running_loop()
        next_heartbeat = loop.time()
        while True:
            self._wake.clear()
            # Read before collecting: what was pending when ``close`` came is written first.
            closing = self._closing.is_set()
            for message in list(self._pending()):  # one snapshot keeps starts before results
                logger.debug("writing %s to region at %s", message.WhichOneof("body"), self.address)
                await call.write(message)
            if loop.time() >= next_heartbeat:
                await call.write(self._handler.heartbeat())
                next_heartbeat = loop.time() + self._interval
            if closing:
                await call.done_writing()
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(next_heartbeat - loop.time()):
                    await self._wake.wait()
            await asyncio.sleep(0)  # let what is ready in this tick join the same batch

    def _pending(self) -> Iterator[region_pb2.WorkerMessage]:
        """Everything waiting to be written: draining, then starts, then results."""
        if self._draining is not None and not self._draining_sent:
            self._draining_sent = True
            yield self._draining
        if self._started:
            starts, self._started = self._started, []
            yield started_message(starts)
        yield from results_messages(self._outbox.take_unsent())

    async def _pause(self) -> None:
        """Wait out the backoff before the next connection, unless closing."""
        if self._closing.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._backoff.next_delay()):
                await self._closing.wait()

    def _log_failure(self, error: grpc.aio.AioRpcError | LinkError) -> None:
        """One line per failure: a warning for a lost stream or a first failure, else info."""
        if isinstance(error, grpc.aio.AioRpcError):
            reason = f"{error.code().name}: {error.details()}"
        else:
            reason = str(error)
        if self.state is LinkState.CONNECTED:
            logger.warning(
                "lost the stream to region at %s (%s); reconnecting", self.address, reason
            )
            return
        level = logging.WARNING if self._backoff.failures == 0 else logging.INFO
        logger.log(level, "cannot reach region at %s (%s); retrying", self.address, reason)
