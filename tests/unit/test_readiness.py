"""The READY line a daemon prints once it serves, and what the supervisor reads back."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from taskmesh.common.readiness import announce_ready, parse_ready_line, ready_line
from taskmesh.common.topology import Address


def test_the_line_names_each_address_in_order() -> None:
    """IPv6 hosts are bracketed, as everywhere an address is written."""
    line = ready_line(grpc=Address("127.0.0.1", 5), http=Address("::1", 6))
    assert line == "READY grpc=127.0.0.1:5 http=[::1]:6"


def test_the_supervisor_reads_back_what_was_printed() -> None:
    """``parse_ready_line`` inverts ``ready_line``."""
    line = ready_line(grpc=Address("127.0.0.1", 5), http=Address("::1", 6))
    assert parse_ready_line(line) == {"grpc": "127.0.0.1:5", "http": "[::1]:6"}


def test_announcing_prints_the_line_and_tells_systemd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One line on stdout, then READY=1 on $NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.settimeout(5)
        announce_ready({"NOTIFY_SOCKET": str(path)}, http=Address("127.0.0.1", 9100))
        assert receiver.recv(64) == b"READY=1"
    assert capsys.readouterr().out == "READY http=127.0.0.1:9100\n"
