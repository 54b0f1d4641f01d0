"""sd_notify to a real AF_UNIX datagram socket: a path, the abstract namespace, none at all;
the watchdog's configuration from the environment and its pings."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from taskmesh.common.systemd import (
    SystemdWatchdog,
    WatchdogConfig,
    notify_systemd,
    socket_address,
    watchdog_config,
)


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    """An unbound datagram socket that gives up on ``recv`` after 5 s."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        yield sock


def test_systemd_is_told_on_its_socket(receiver: socket.socket, tmp_path: Path) -> None:
    """READY=1 goes to $NOTIFY_SOCKET; without the variable nothing is sent."""
    path = tmp_path / "notify.sock"
    receiver.bind(str(path))
    notify_systemd({}, "READY=1")
    notify_systemd({"NOTIFY_SOCKET": str(path)}, "READY=1")
    assert receiver.recv(64) == b"READY=1"


def test_an_at_sign_names_a_socket_in_the_abstract_namespace(receiver: socket.socket) -> None:
    """``@name`` is ``\\0name``: no file, the way systemd usually passes it."""
    name = f"taskmesh-test-{uuid.uuid4().hex}"
    receiver.bind(f"\0{name}")
    notify_systemd({"NOTIFY_SOCKET": f"@{name}"}, "STOPPING=1")
    assert receiver.recv(64) == b"STOPPING=1"


def test_an_empty_variable_is_outside_systemd(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing is sent and nothing is logged."""
    with caplog.at_level(logging.DEBUG):
        notify_systemd({"NOTIFY_SOCKET": ""}, "READY=1")
    assert caplog.records == []


def test_a_socket_nobody_listens_on_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon serves regardless; the operator reads why systemd was not told."""
    notify_systemd({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}, "READY=1")
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("could not notify systemd: ")


@pytest.mark.parametrize(
    ("path", "address"),
    [("/run/systemd/notify", "/run/systemd/notify"), ("@notify", "\0notify")],
)
def test_socket_address(path: str, address: str) -> None:
    """Only a leading ``@`` changes the address."""
    assert socket_address(path) == address


def test_watchdog_config_is_half_of_watchdog_usec_for_this_process() -> None:
    """Like sd_watchdog_enabled(3): our pid or none, a positive number, and a socket."""
    env = {"NOTIFY_SOCKET": "@sd", "WATCHDOG_USEC": "3000000"}
    assert watchdog_config(env) == WatchdogConfig("@sd", timedelta(seconds=1.5))
    assert watchdog_config({**env, "WATCHDOG_PID": "42"}, pid=42) is not None
    assert watchdog_config({**env, "WATCHDOG_PID": "43"}, pid=42) is None
    assert watchdog_config({**env, "WATCHDOG_USEC": "0"}) is None
    assert watchdog_config({**env, "WATCHDOG_USEC": "soon"}) is None
    assert watchdog_config({"WATCHDOG_USEC": "3000000"}) is None


async def test_the_watchdog_pings_while_healthy_and_says_stopping(tmp_path: Path) -> None:
    """WATCHDOG=1 every interval while healthy, none once unhealthy, STOPPING=1 at the end."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.setblocking(False)
        healthy = True
        watchdog = SystemdWatchdog(
            WatchdogConfig(str(path), timedelta(milliseconds=50)), lambda: healthy
        )
        running = asyncio.create_task(watchdog.run())
        loop = asyncio.get_running_loop()
        received = [await asyncio.wait_for(loop.sock_recv(receiver, 64), 5) for _ in range(3)]
        assert received == [b"WATCHDOG=1"] * 3
        healthy = False
        await asyncio.sleep(0.3)
        while True:  # what was sent before the change
            try:
                receiver.recv(64)
            except BlockingIOError:
                break
        await asyncio.sleep(0.3)
        with pytest.raises(BlockingIOError):
            receiver.recv(64)
        watchdog.stop()
        await asyncio.wait_for(running, 5)
        assert receiver.recv(64) == b"STOPPING=1"
