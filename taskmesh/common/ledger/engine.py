"""Engines for the ledger, and the one place driver errors become taskmesh errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
from sqlalchemy import exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from taskmesh.common.errors import LedgerUnavailableError, ValidationError

DRIVER = "postgresql+asyncpg"
CONNECT_TIMEOUT_SECONDS = 5.0
CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock
# SQLSTATE classes meaning "the server is not there for you right now".
UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P")
CHECK_VIOLATION = "23514"
UNAVAILABLE_ERRORS = (
    OSError,
    TimeoutError,
    exc.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
)


def asyncpg_url(url: str | URL) -> URL:
    """Turn a plain ``postgresql://`` (or ``postgres://``) URL into an asyncpg one."""
    # str() of a URL object masks the password as ***: render it in full instead.
    text = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
    parsed = make_url(text.replace("postgres://", "postgresql://", 1))
    if parsed.get_backend_name() != "postgresql":
        raise ValidationError(
            "database_url", f"expected a postgresql:// URL, got scheme {parsed.drivername!r}"
        )
    return parsed.set(drivername=DRIVER)


def create_engine(
    url: str | URL,
    *,
    pool_size: int = 5,
    application_name: str = "taskmesh",
    pre_ping: bool = True,
) -> AsyncEngine:
    """A small asyncpg pool for one daemon; connections are created lazily.

    Connections are pinged at checkout (unless ``pre_ping`` is off), so those a server restart
    killed are replaced instead of failing the next operation. Without the ping that operation
    fails as ``LedgerUnavailableError`` and the pool replaces the connection: for a caller that
    retries anyway and counts its round trips.
    """
    return create_async_engine(
        asyncpg_url(url),
        pool_size=pool_size,
        pool_pre_ping=pre_ping,
        max_overflow=pool_size,
        pool_timeout=CONNECT_TIMEOUT_SECONDS,
        connect_args={
            "timeout": CONNECT_TIMEOUT_SECONDS,
            "server_settings": {"application_name": application_name},
        },
    )


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE carried by a driver error, if any."""
    if isinstance(error, exc.DBAPIError):
        code = getattr(error.orig, "pgcode", None) or getattr(error.orig, "sqlstate", None)
        return str(code) if code else None
    if isinstance(error, asyncpg.PostgresError):
        return str(error.sqlstate)
    return None


def is_conflict(error: BaseException) -> bool:
    """True for errors that a fresh attempt of the same transaction may not meet again."""
    return sqlstate(error) in CONFLICT_SQLSTATES


def _causes(error: BaseException | None) -> Iterator[BaseException]:
    """The error and every error it was raised from."""
    while error is not None:
        yield error
        error = error.__cause__


def is_unavailable(error: BaseException) -> bool:
    """True when the error means PostgreSQL cannot be reached or is not serving."""
    for cause in _causes(error):
        if isinstance(cause, UNAVAILABLE_ERRORS):
            return True
        if isinstance(cause, exc.DBAPIError) and cause.connection_invalidated:
            return True
    code = sqlstate(error)
    return code is not None and code.startswith(UNAVAILABLE_SQLSTATE_PREFIXES)


def _violated_constraint(error: exc.DBAPIError) -> str:
    """The name of the constraint a driver error reports, or '' if unknown."""
    cause = error.orig.__cause__ if error.orig is not None else None
    return str(getattr(cause, "constraint_name", "") or "")


@contextmanager
def translated_errors() -> Iterator[None]:
    """Re-raise driver errors as ``LedgerUnavailableError`` or ``ValidationError``."""
    try:
        yield
    except (OSError, TimeoutError, exc.SQLAlchemyError, asyncpg.PostgresError) as error:
        if is_unavailable(error):
            raise LedgerUnavailableError(f"the ledger is unavailable: {error}") from error
        if is_conflict(error):  # still deadlocking after the retries: overloaded, try later
            raise LedgerUnavailableError(f"the ledger is overloaded: {error}") from error
        if isinstance(error, exc.DBAPIError) and sqlstate(error) == CHECK_VIOLATION:
            name = _violated_constraint(error) or "value"
            raise ValidationError(name, "is out of the range the ledger accepts") from error
        raise
