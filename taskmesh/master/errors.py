"""How the master's errors leave it: the one gRPC status and the one HTTP status of each type.

``common.rpc.status`` owns the gRPC codes of the shared error tree; this module turns a ledger
outage into the retryable unavailability a client should see, and owns every HTTP status the
REST API answers with.
"""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
import grpc.aio

from taskmesh.common.errors import (
    ConflictError,
    LedgerUnavailableError,
    NotFoundError,
    NotSupportedError,
    OverloadedError,
    TaskmeshError,
    TooLargeError,
    UnauthenticatedError,
    UnavailableError,
    ValidationError,
)
from taskmesh.common.rpc.status import abort_with, status_code

__all__ = [
    "NotSupportedError",
    "abort",
    "grpc_status",
    "http_body",
    "http_headers",
    "http_status",
    "reportable",
]


_HTTP_STATUSES: tuple[tuple[type[TaskmeshError], int], ...] = (
    (TooLargeError, 413),  # before ValidationError, which it refines
    (ValidationError, 400),
    (UnauthenticatedError, 401),
    (NotFoundError, 404),
    (ConflictError, 409),
    (OverloadedError, 429),
    (NotSupportedError, 501),
    (UnavailableError, 503),
)


def reportable(error: TaskmeshError) -> TaskmeshError:
    """The error a client should see: a ledger outage is a retryable unavailability."""
    if isinstance(error, LedgerUnavailableError):
        return UnavailableError(f"the master cannot reach its ledger, retry later: {error}")
    return error


def grpc_status(error: TaskmeshError) -> grpc.StatusCode:
    """The gRPC status code the master answers ``error`` with."""
    return status_code(reportable(error))


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: TaskmeshError) -> NoReturn:
    """End the current RPC with the status ``error`` maps to, field name in the metadata."""
    await abort_with(context, reportable(error))


def http_status(error: TaskmeshError) -> int:
    """The HTTP status the REST API answers ``error`` with (500 for anything unmapped)."""
    error = reportable(error)
    for error_type, status in _HTTP_STATUSES:
        if isinstance(error, error_type):
            return status
    return 500


def http_body(error: TaskmeshError) -> dict[str, object]:
    """The JSON error body: ``{"error": {"field": ..., "message": ...}}``."""
    error = reportable(error)
    if isinstance(error, ValidationError):
        return {"error": {"field": error.field, "message": error.message}}
    return {"error": {"field": None, "message": str(error)}}


def http_headers(error: TaskmeshError) -> dict[str, str]:
    """Extra response headers: when to retry an overloaded or unavailable master."""
    error = reportable(error)
    if isinstance(error, OverloadedError):
        return {"Retry-After": str(max(1, round(error.retry_after)))}
    if isinstance(error, UnavailableError):
        return {"Retry-After": "1"}
    if isinstance(error, UnauthenticatedError):
        return {"WWW-Authenticate": 'Bearer realm="taskmesh"'}
    return {}
