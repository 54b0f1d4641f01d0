"""``GET /v1/events/stream``: the ledger's event log as server-sent events.

It rides on the same watch as gRPC ``WatchEvents`` (``event_watch``): each non-empty batch
becomes one message ``event: runs`` whose ``id`` is the batch's last event id, so a browser's
``EventSource`` that reconnects sends ``Last-Event-ID`` and resumes without a gap; an empty batch
(the watch's keep-alive) becomes a comment line. A client that left is noticed at the next write
(within the keep-alive interval); the app's shutdown ends every stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from uuid import UUID

from aiohttp import web

from taskmesh.common.errors import ValidationError
from taskmesh.common.model import EventFilter, RunEvent
from taskmesh.master.task_api import TaskApi
from taskmesh.master.task_json import run_event_json

log = logging.getLogger(__name__)

RETRY_MILLISECONDS = 2000  # how long a browser waits before reconnecting
BATCH_EVENT = "runs"
HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # proxies must not buffer the stream
}


def sse_message(event: str, event_id: int, data: str) -> bytes:
    """One SSE message; ``data`` must be a single line (compact JSON is)."""
    if "\n" in data or "\r" in data:
        raise ValueError("SSE data must be one line")
    return f"id: {event_id}\nevent: {event}\ndata: {data}\n\n".encode()


def batch_message(events: Sequence[RunEvent]) -> bytes:
    """The message of one batch of events, or a keep-alive comment for an empty batch."""
    if not events:
        return b": keep-alive\n\n"
    data = json.dumps({"events": [run_event_json(event) for event in events]})
    return sse_message(BATCH_EVENT, events[-1].id, data)


class EventStream:
    """Streams run events to browsers until they leave or the master shuts down."""

    def __init__(self, api: TaskApi) -> None:
        """Watch events through ``api``."""
        self._api = api
        self._stopping = asyncio.Event()

    async def close(self, app: web.Application) -> None:
        """End every open stream (an ``on_shutdown`` hook)."""
        self._stopping.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Events after ``Last-Event-ID`` / ``after_id`` (default: from now), by task or region."""
        filters = event_filter(request)
        cursor = await self._api.event_cursor(after_id(request))
        response = web.StreamResponse(headers=HEADERS)
        await response.prepare(request)
        try:
            await response.write(f"retry: {RETRY_MILLISECONDS}\n\n".encode())
            # Each poll of the watch is its own transaction: leaving it mid-way holds nothing.
            async for events in self._api.watch_events(filters, cursor, self._stopping):
                await response.write(batch_message(events))
        except ConnectionResetError:
            log.debug("event stream: %s left", request.remote)
        return response


def after_id(request: web.Request) -> int:
    """The resume cursor: the ``Last-Event-ID`` header, else ``after_id``, else 0 (from now)."""
    text = request.headers.get("Last-Event-ID") or request.query.get("after_id") or "0"
    try:
        return int(text)
    except ValueError:
        raise ValidationError("after_id", f"must be an integer event id, got {text!r}") from None


def event_filter(request: web.Request) -> EventFilter:
    """The ``task_id`` and ``region`` query filters."""
    task_id = request.query.get("task_id") or None
    region = request.query.get("region") or None
    if task_id is None:
        return EventFilter(region=region)
    return EventFilter(task_id=_uuid(task_id), region=region)


def _uuid(text: str) -> UUID:
    """A task id filter."""
    try:
        return UUID(text)
    except ValueError:
        raise ValidationError("task_id", f"must be a task id (a UUID), got {text!r}") from None
