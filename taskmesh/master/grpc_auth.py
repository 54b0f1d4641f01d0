"""The gRPC server interceptor that guards the client-facing ``Scheduler`` service.

Only ``/taskmesh.v1.Scheduler/`` methods are checked: the standard health service stays open
for probes. A refused call ends UNAUTHENTICATED before the servicer runs, with the same message
REST gives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
import grpc.aio

from taskmesh.common.errors import UnauthenticatedError
from taskmesh.master.auth import ClientAuth
from taskmesh.master.errors import abort

SCHEDULER_PREFIX = "/taskmesh.v1.Scheduler/"
AUTHORIZATION_KEY = "authorization"

if TYPE_CHECKING:  # the stubs are generic, the runtime classes are not
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses ``Scheduler`` calls without a valid ``authorization: Bearer`` metadata entry."""

    def __init__(self, auth: ClientAuth) -> None:
        """Check calls with ``auth``."""
        self._auth = auth

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        """The method's own handler when allowed, else one that ends the call UNAUTHENTICATED."""
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(SCHEDULER_PREFIX):
            return handler
        try:
            self._auth.check(_authorization(handler_call_details))
        except UnauthenticatedError as error:
            return _refusal(handler, error)
        return handler


def _authorization(details: grpc.HandlerCallDetails) -> str | None:
    """The ``authorization`` metadata value of a call, if any."""
    for key, value in details.invocation_metadata or ():
        if key == AUTHORIZATION_KEY and isinstance(value, str):
            return value
    return None


def _refusal(handler: Handler, error: UnauthenticatedError) -> Handler:
    """A handler of the same shape as ``handler`` that aborts with ``error``."""

    async def refuse(request: object, context: Context) -> None:
        await abort(context, error)

    async def refuse_stream(request: object, context: Context) -> AsyncIterator[None]:
        await abort(context, error)
        yield None  # pragma: no cover - abort raises

    decode, encode = handler.request_deserializer, handler.response_serializer
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, decode, encode)
    return grpc.unary_unary_rpc_method_handler(refuse, decode, encode)
