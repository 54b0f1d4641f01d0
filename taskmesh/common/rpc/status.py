"""The one mapping between taskmesh errors and gRPC status codes, in both directions.

Servers call ``abort_with`` to turn a ``TaskmeshError`` into a status; clients call
``error_from_rpc`` to turn a status back into the same exception type. A ``ValidationError``
travels with its field name in trailing metadata so the client can name it again.
"""

from __future__ import annotations

from typing import NoReturn

import grpc
import grpc.aio

from taskmesh.common.errors import (
    ConflictError,
    LedgerUnavailableError,
    NotFoundError,
    NotSupportedError,
    OverloadedError,
    TaskmeshError,
    UnauthenticatedError,
    UnavailableError,
    ValidationError,
)

FIELD_KEY = "taskmesh-field"
RETRY_AFTER_KEY = "taskmesh-retry-after"

_CODES: tuple[tuple[type[TaskmeshError], grpc.StatusCode], ...] = (
    (ValidationError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (ConflictError, grpc.StatusCode.FAILED_PRECONDITION),
    (OverloadedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotSupportedError, grpc.StatusCode.UNIMPLEMENTED),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (LedgerUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
)
_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def status_code(error: TaskmeshError) -> grpc.StatusCode:
    """The gRPC status code for ``error`` (INTERNAL for anything unmapped)."""
    for error_type, code in _CODES:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL


def trailing_metadata(error: TaskmeshError) -> tuple[tuple[str, str], ...]:
    """Structured details of ``error`` that the message text alone would lose."""
    if isinstance(error, ValidationError):
        return ((FIELD_KEY, error.field),)
    if isinstance(error, OverloadedError):
        return ((RETRY_AFTER_KEY, f"{error.retry_after:g}"),)
    return ()


async def abort_with(
    context: grpc.aio.ServicerContext[object, object], error: TaskmeshError
) -> NoReturn:
    """End the current RPC with the status that ``error`` maps to."""
    context.set_trailing_metadata(trailing_metadata(error))
    message = error.message if isinstance(error, ValidationError) else str(error)
    await context.abort(status_code(error), message)
    raise AssertionError("unreachable: context.abort raises")


def error_from_rpc(error: grpc.RpcError) -> TaskmeshError:
    """The taskmesh exception a failed call stands for."""
    code, details, metadata = _parts(error)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return ValidationError(metadata.get(FIELD_KEY, "request"), details)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return OverloadedError(details, float(metadata.get(RETRY_AFTER_KEY, "1")))
    if code in _TRANSIENT:
        return UnavailableError(f"taskmesh is unreachable ({code.name}): {details}")
    for error_type, mapped in _CODES:
        if code is mapped:
            return error_type(details)
    return TaskmeshError(f"{code.name}: {details}")


def _parts(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """Code, details and string metadata of a sync (``grpc.Call``) or asyncio call error."""
    if not isinstance(error, grpc.Call | grpc.aio.AioRpcError):
        return grpc.StatusCode.UNKNOWN, str(error), {}
    pairs = error.trailing_metadata() or ()
    metadata = {key: value for key, value in pairs if isinstance(value, str)}
    return error.code(), error.details() or str(error), metadata
