"""The ``WorkerLink`` service: one long-lived bidirectional stream per worker.

The first message must be a registration, answered by a welcome; after that a reader task
hands each worker message to ``WorkerSessions`` while the handler writes whatever the region
queued for the worker (assignments, cancels, acks, drain). The stream ends when the worker
closes it or breaks it, or when the region closes it (silence, a newer stream of the same
worker, shutdown); in every case the worker's runs are taken back exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from taskmesh.common.errors import ValidationError
from taskmesh.common.rpc import region_pb2, region_pb2_grpc
from taskmesh.region import messages
from taskmesh.region.runtime import RegionRuntime
from taskmesh.region.worker_registry import ConnectedWorker
from taskmesh.region.worker_sessions import WorkerSessions

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[region_pb2.WorkerMessage, region_pb2.RegionMessage]


class WorkerLinkService(region_pb2_grpc.WorkerLinkServicer):
    """Serves ``WorkerLink.Connect``."""

    def __init__(self, runtime: RegionRuntime, sessions: WorkerSessions) -> None:
        self._runtime = runtime
        self._sessions = sessions
        self._handlers: dict[str, Callable[[ConnectedWorker, region_pb2.WorkerMessage], None]] = {
            "heartbeat": lambda worker, m: sessions.heartbeat(worker, m.heartbeat),
            "started": lambda worker, m: sessions.started(worker, m.started),
            "results": lambda worker, m: sessions.results(worker, m.results),
            "draining": lambda worker, m: sessions.draining(worker, m.draining),
        }

    async def Connect(
        self, request_iterator: AsyncIterator[region_pb2.WorkerMessage], context: Context
    ) -> AsyncIterator[region_pb2.RegionMessage]:
        """Register the worker, then pump its messages both ways until the stream ends."""
        worker = await self._register(request_iterator, context)
        reader = asyncio.create_task(
            self._read(worker, request_iterator), name=f"worker-stream:{worker.id}"
        )
        try:
            while (message := await worker.next_message()) is not None:
                yield message
        finally:
            reader.cancel()
            self._sessions.disconnect(worker, "broke its stream", failure=True)

    async def _register(
        self, requests: AsyncIterator[region_pb2.WorkerMessage], context: Context
    ) -> ConnectedWorker:
        """Read and apply the registration; abort the stream when there is none."""
        config = self._runtime.config
        if self._runtime.draining:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"region {config.name} is shutting down"
            )
        try:
            timeout = config.worker_heartbeat_timeout.total_seconds()
            first = await asyncio.wait_for(anext(requests), timeout)
        except (StopAsyncIteration, TimeoutError):
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no registration received")
        if first.WhichOneof("body") != "register":
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "the first message must be a registration"
            )
        try:
            worker, abandon = self._sessions.register(first.register)
        except ValidationError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        interval, silence = config.workers.heartbeat_interval, config.worker_heartbeat_timeout
        worker.send(messages.welcome(config.name, interval, silence, abandon))
        return worker

    async def _read(
        self, worker: ConnectedWorker, requests: AsyncIterator[region_pb2.WorkerMessage]
    ) -> None:
        """Handle the worker's messages; when it closes its side, let it go."""
        try:
            async for message in requests:
                worker.seen_at = self._runtime.clock()
                self._handle(worker, message)
        except Exception as error:  # a broken stream; CancelledError passes
            log.warning("stream of worker %s failed: %r", worker.id, error)
            self._sessions.disconnect(worker, "broke its stream", failure=True)
            return
        drained = worker.draining and not worker.held
        self._sessions.disconnect(worker, "closed its stream", failure=not drained)

    def _handle(self, worker: ConnectedWorker, message: region_pb2.WorkerMessage) -> None:
        """Dispatch one message by kind; a malformed one is logged and skipped."""
        kind = message.WhichOneof("body")
        handler = self._handlers.get(kind or "")
        if handler is None:
            log.warning("worker %s sent an unexpected %s message", worker.id, kind)
            return
        try:
            handler(worker, message)
        except ValidationError as error:
            log.warning("worker %s sent a malformed %s message: %s", worker.id, kind, error)
