"""sd_notify: telling systemd about a daemon's state through ``$NOTIFY_SOCKET``.

A daemon started by systemd with ``Type=notify`` gets the path of a datagram socket in
``NOTIFY_SOCKET``; a leading ``@`` names a socket in the abstract namespace. Outside systemd
the variable is unset and notifying does nothing.

With ``WatchdogSec=`` systemd also sets ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``) and restarts
the service when no ``WATCHDOG=1`` arrives within that time. The entry points read those
variables once (``watchdog_config``); the daemon runs ``SystemdWatchdog`` in its main TaskGroup,
so a blocked event loop or a dead background task stops the pings and systemd steps in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta

log = logging.getLogger(__name__)

NOTIFY_SOCKET_VARIABLE = "NOTIFY_SOCKET"
WATCHDOG_USEC_VARIABLE = "WATCHDOG_USEC"
WATCHDOG_PID_VARIABLE = "WATCHDOG_PID"


def notify_systemd(env: Mapping[str, str], state: str) -> None:
    """Send ``state`` (e.g. ``READY=1``) to ``$NOTIFY_SOCKET``; a no-op outside systemd.

    A socket that cannot be reached is logged, never raised: the daemon serves regardless.
    """
    path = env.get(NOTIFY_SOCKET_VARIABLE)
    if path:
        notify_socket(path, state)


def notify_socket(path: str, state: str) -> None:
    """Send ``state`` to the notification socket at ``path``; failures are logged."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(state.encode(), socket_address(path))
        except OSError as error:
            log.warning("could not notify systemd: %s", error)


def socket_address(path: str) -> str:
    """The ``AF_UNIX`` address of ``path``: ``@name`` is ``name`` in the abstract namespace."""
    return "\0" + path[1:] if path.startswith("@") else path


@dataclass(frozen=True, slots=True)
class WatchdogConfig:
    """systemd's watchdog for this process: where to ping, and how often (half its timeout)."""

    socket: str
    interval: timedelta


def watchdog_config(env: Mapping[str, str], pid: int | None = None) -> WatchdogConfig | None:
    """The watchdog systemd asked this process (``pid``, default ours) for; None if none.

    Like sd_watchdog_enabled(3): ``WATCHDOG_USEC`` must be a positive number of microseconds,
    and a ``WATCHDOG_PID`` naming another process means the watchdog is not ours.
    """
    path = env.get(NOTIFY_SOCKET_VARIABLE, "")
    usec = env.get(WATCHDOG_USEC_VARIABLE, "")
    owner = env.get(WATCHDOG_PID_VARIABLE, "")
    if not path or not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return WatchdogConfig(path, timedelta(microseconds=int(usec)) / 2)


class SystemdWatchdog:
    """Sends ``WATCHDOG=1`` every ``interval`` while ``healthy()``; ``STOPPING=1`` on stop.

    It runs as a task of the daemon's main loop: if the loop blocks, or ``healthy`` (typically
    "every other background task still runs") turns false, the pings stop and systemd restarts
    the service after ``WatchdogSec``.
    """

    def __init__(self, config: WatchdogConfig, healthy: Callable[[], bool]) -> None:
        self._config = config
        self._healthy = healthy
        self._stopping = asyncio.Event()
        self._warned = False

    def stop(self) -> None:
        """Stop pinging: the daemon is shutting down, which systemd is told."""
        self._stopping.set()

    async def run(self) -> None:
        """Ping until stopped."""
        seconds = self._config.interval.total_seconds()
        while not self._stopping.is_set():
            self.ping()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._stopping.wait()
        notify_socket(self._config.socket, "STOPPING=1")

    def ping(self) -> None:
        """One ``WATCHDOG=1``, unless the daemon is unhealthy (said once in the log)."""
        if self._healthy():
            notify_socket(self._config.socket, "WATCHDOG=1")
            self._warned = False
        elif not self._warned:
            log.error("a background task has stopped: no more watchdog pings for systemd")
            self._warned = True


def start_watchdog(
    config: WatchdogConfig | None,
    tasks: asyncio.TaskGroup,
    watched: Collection[asyncio.Task[None]],
) -> SystemdWatchdog | None:
    """Run a watchdog in ``tasks``, healthy while none of ``watched`` has ended; None if unasked.

    A background loop that returns early does not end its TaskGroup (only an exception does),
    so the pings stop then and systemd restarts the daemon that quietly lost a duty.
    """
    if config is None:
        return None
    watchdog = SystemdWatchdog(config, lambda: not any(task.done() for task in watched))
    tasks.create_task(watchdog.run(), name="systemd-watchdog")
    return watchdog
