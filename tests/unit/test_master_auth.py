"""Bearer tokens of the master's client API: the token file, its reloads, and event tickets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskmesh.common.errors import ConfigError, UnauthenticatedError
from taskmesh.master.auth import ClientAuth, EventTickets, TokenFile, bearer_token


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_tokens_are_lines_without_comments_and_blanks(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# operators\n  alpha-token  \n\n#beta-token\ngamma-token\n")
    tokens = TokenFile(path)
    assert tokens.allows("alpha-token")
    assert tokens.allows("gamma-token")
    assert not tokens.allows("beta-token")
    assert not tokens.allows("# operators")
    assert not tokens.allows("")


def test_a_changed_file_is_reread_and_a_revoked_token_refused(tmp_path: Path) -> None:
    path, clock = tmp_path / "tokens", FakeClock()
    write(path, "old-token\n", 1_000_000_000)
    tokens = TokenFile(path, clock=clock)
    write(path, "new-token\n", 2_000_000_000)
    assert tokens.allows("old-token")  # checked at most once a second
    clock.now += 1.5
    assert tokens.allows("new-token")
    assert not tokens.allows("old-token")


def test_an_unreadable_file_keeps_the_previous_tokens(tmp_path: Path) -> None:
    path, clock = tmp_path / "tokens", FakeClock()
    write(path, "kept-token\n", 1_000_000_000)
    tokens = TokenFile(path, clock=clock)
    path.unlink()
    clock.now += 2
    assert tokens.allows("kept-token")


def test_a_file_without_tokens_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="holds no token"):
        TokenFile(path)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token_parsing(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_client_auth_messages_say_what_to_send(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("s3cret-token\n")
    auth = ClientAuth.from_file(path)
    auth.check("Bearer s3cret-token")
    with pytest.raises(UnauthenticatedError, match="authorization: Bearer <token>"):
        auth.check(None)
    with pytest.raises(UnauthenticatedError, match="not valid"):
        auth.check("Bearer wrong")


def test_auth_off_lets_everything_through() -> None:
    auth = ClientAuth.from_file(None)
    assert not auth.enabled
    auth.check(None)


def test_tickets_expire_and_cannot_be_forged() -> None:
    clock = FakeClock()
    tickets = EventTickets(lifetime=60, clock=clock)
    ticket = tickets.issue()
    assert tickets.valid(ticket)
    expires, _, signature = ticket.partition(".")
    assert not tickets.valid(f"{int(expires) + 3600}.{signature}")  # a later expiry
    assert not tickets.valid(f"{expires}.{'0' * len(signature)}")
    assert not EventTickets(clock=clock).valid(ticket)  # another process's key
    assert not tickets.valid(None)
    clock.now += 61
    assert not tickets.valid(ticket)
