"""The exception tree shared by every tier.

Every error a user or operator can see is a ``TaskmeshError``. Messages say what was wrong and
what to change. Transport layers (gRPC status codes, HTTP statuses, CLI exit codes) map these
types in one place each; nothing else inspects message text.
"""

from __future__ import annotations


class TaskmeshError(Exception):
    """Base class of every error taskmesh raises on purpose."""


class ConfigError(TaskmeshError):
    """The topology or command-line configuration is invalid; ``problems`` lists each one."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(self.problems))


class ValidationError(TaskmeshError):
    """A request is malformed: ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class TooLargeError(ValidationError):
    """A request, or one of its fields, is over its size limit: ``field`` names which."""


class UnauthenticatedError(TaskmeshError):
    """The caller presented no valid bearer token for an API that requires one."""


class NotFoundError(TaskmeshError):
    """The named task, run, region or worker does not exist."""


class ConflictError(TaskmeshError):
    """The request contradicts the current state (e.g. cancelling a finished run)."""


class NotSupportedError(TaskmeshError):
    """The request is well formed but asks for something taskmesh does not offer yet."""


class IllegalTransitionError(ConflictError):
    """A run state transition was refused: wrong current state or stale epoch."""


class StaleEpochError(IllegalTransitionError):
    """A write carried an epoch older than the run's current one (a fenced-off writer)."""


class LedgerUnavailableError(TaskmeshError):
    """The PostgreSQL ledger cannot be reached right now; callers retry with backoff."""


class PostgresNotFoundError(TaskmeshError):
    """No PostgreSQL server binaries were found for the embedded ledger."""


class EmbeddedPostgresError(TaskmeshError):
    """The embedded PostgreSQL server could not be initialised, started or stopped."""


class UnavailableError(TaskmeshError):
    """A taskmesh daemon cannot be reached (down, restarting, or partitioned)."""


class OverloadedError(TaskmeshError):
    """Admission control refused the request; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)
