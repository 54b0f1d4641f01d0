"""Bearer-token authentication of the master's HTTP API, and the dashboard's event ticket.

Every route needs ``Authorization: Bearer <token>`` when auth is on, except the probes
(``/healthz``, ``/readyz``, ``/metrics``) and the dashboard's page and static files, which hold
no data. ``POST /v1/session`` (itself authenticated) sets a short-lived ticket cookie that
admits the browser to ``GET /v1/events/stream`` only: ``EventSource`` cannot send headers
(see ``auth`` for why a cookie ticket rather than a token in the URL).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from taskmesh.master.auth import ClientAuth, EventTickets

OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics"})
OPEN_PREFIX = "/dashboard/static/"
EVENTS_PATH = "/v1/events/stream"
SESSION_PATH = "/v1/session"
TICKET_COOKIE = "taskmesh_events"


def is_open(path: str) -> bool:
    """True for the routes anyone may read: probes and the dashboard's static page."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIX)


def bearer_auth(auth: ClientAuth, tickets: EventTickets) -> Middleware:
    """The middleware that refuses unauthenticated requests (an ``UnauthenticatedError``)."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not auth.enabled or is_open(request.path):
            return await handler(request)
        if request.path == EVENTS_PATH and tickets.valid(request.cookies.get(TICKET_COOKIE)):
            return await handler(request)
        auth.check(request.headers.get("Authorization"))
        return await handler(request)

    return authenticate


class EventSession:
    """``POST /v1/session``: trade the bearer token for an event-stream ticket cookie."""

    def __init__(self, tickets: EventTickets) -> None:
        """Issue ``tickets``."""
        self._tickets = tickets

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Add the session route."""
        router.add_post(SESSION_PATH, self.open)

    async def open(self, request: web.Request) -> web.Response:
        """Set the ticket cookie: HttpOnly, SameSite=Strict, valid ``lifetime`` seconds."""
        lifetime = self._tickets.lifetime
        response = web.json_response({"expires_in": lifetime})
        response.set_cookie(
            TICKET_COOKIE,
            self._tickets.issue(),
            max_age=lifetime,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        return response
