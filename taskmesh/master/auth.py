"""Bearer tokens for the master's client API, and short-lived tickets for the event stream.

Tokens live in a file named by ``master.auth.tokens_file``: one per line, blank lines and lines
starting with ``#`` ignored. The file is re-read when its modification time or size changes
(checked at most once per ``RELOAD_CHECK_SECONDS``), so adding or revoking a token needs no
restart. Presented tokens are compared by SHA-256 digest with ``hmac.compare_digest`` against
every configured token, so neither a token's content nor its length leaks through timing.

A browser's ``EventSource`` cannot send an ``Authorization`` header, so the dashboard trades its
token for a ticket (``POST /v1/session``) that travels as an HttpOnly, SameSite=Strict cookie and
opens only ``GET /v1/events/stream``. A ticket is an expiry time signed with a key that lives only
in this master process: it cannot be forged, ends within ``TICKET_SECONDS`` (so a revoked token
loses its stream within that bound), and is never written to URLs or logs the way a query token
would be.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from taskmesh.common.errors import ConfigError, UnauthenticatedError

log = logging.getLogger(__name__)

RELOAD_CHECK_SECONDS = 1.0
TICKET_SECONDS = 300
SCHEME = "bearer"
HOW_TO = (
    "send the header 'authorization: Bearer <token>' (CLI: --token-file or $TASKMESH_TOKEN_FILE)"
)


def read_tokens(path: Path) -> frozenset[bytes]:
    """The SHA-256 digests of the tokens in ``path``; ``ConfigError`` if it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([f"master.auth.tokens_file: cannot read {path}: {error}"]) from None
    lines = (line.strip() for line in text.splitlines())
    return frozenset(_digest(line) for line in lines if line and not line.startswith("#"))


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == SCHEME and token else None


class TokenFile:
    """The configured tokens, re-read when the file changes."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        """Read ``path`` now; ``ConfigError`` when it is unreadable or holds no token."""
        self.path = path
        self._clock = clock
        self._stamp = self._file_stamp()
        self._digests = read_tokens(path)
        self._checked_at = clock()
        if not self._digests:
            raise ConfigError([f"master.auth.tokens_file: {path} holds no token"])

    def allows(self, token: str) -> bool:
        """True when ``token`` is one of the configured tokens (constant time per token)."""
        self._reload_if_changed()
        presented = _digest(token)
        matches = [hmac.compare_digest(presented, known) for known in self._digests]
        return any(matches)

    def _reload_if_changed(self) -> None:
        """Re-read the file when its stamp changed; keep the old tokens if it cannot be read."""
        now = self._clock()
        if now - self._checked_at < RELOAD_CHECK_SECONDS:
            return
        self._checked_at = now
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        try:
            self._digests = read_tokens(self.path)
        except ConfigError as error:
            log.warning("keeping the previous tokens: %s", error)
            return
        self._stamp = stamp
        log.info("reloaded %d bearer tokens from %s", len(self._digests), self.path)

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            status = os.stat(self.path)
        except OSError:
            return None
        return status.st_mtime_ns, status.st_size


class ClientAuth:
    """Decides whether a client call may proceed: always when auth is off."""

    def __init__(self, tokens: TokenFile | None) -> None:
        """Check calls against ``tokens``; None turns authentication off."""
        self._tokens = tokens

    @classmethod
    def from_file(cls, path: Path | None) -> ClientAuth:
        """Authentication from ``master.auth.tokens_file`` (None: off)."""
        return cls(None if path is None else TokenFile(path))

    @property
    def enabled(self) -> bool:
        """True when calls need a token."""
        return self._tokens is not None

    def check(self, authorization: str | None) -> None:
        """Return if the ``authorization`` value is acceptable, else ``UnauthenticatedError``."""
        if self._tokens is None:
            return
        token = bearer_token(authorization)
        if token is None:
            raise UnauthenticatedError(f"this master requires a bearer token: {HOW_TO}")
        if not self._tokens.allows(token):
            raise UnauthenticatedError("the bearer token is not valid for this master")


class EventTickets:
    """Signed, expiring tickets that admit a browser to the event stream."""

    def __init__(
        self, *, lifetime: int = TICKET_SECONDS, clock: Callable[[], float] = time.time
    ) -> None:
        """Sign with a fresh random key: tickets die with this process."""
        self.lifetime = lifetime
        self._key = os.urandom(32)
        self._clock = clock

    def issue(self) -> str:
        """A new ticket, valid for ``lifetime`` seconds."""
        expires = str(int(self._clock()) + self.lifetime)
        return f"{expires}.{self._sign(expires)}"

    def valid(self, ticket: str | None) -> bool:
        """True for an unexpired ticket this process issued."""
        if not ticket:
            return False
        expires, _, signature = ticket.partition(".")
        if not hmac.compare_digest(signature, self._sign(expires)):
            return False
        return expires.isdigit() and int(expires) > self._clock()

    def _sign(self, expires: str) -> str:
        return hmac.new(self._key, expires.encode(), hashlib.sha256).hexdigest()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()
