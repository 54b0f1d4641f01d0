"""sd_notify: telling systemd about a daemon's state through ``$NOTIFY_SOCKET``.

A daemon started by systemd with ``Type=notify`` gets the path of a datagram socket in
``NOTIFY_SOCKET``; a leading ``@`` names a socket in the abstract namespace. Outside systemd
the variable is unset and notifying does nothing.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

NOTIFY_SOCKET_VARIABLE = "NOTIFY_SOCKET"


def notify_systemd(env: Mapping[str, str], state: str) -> None:
    """Send ``state`` (e.g. ``READY=1``) to ``$NOTIFY_SOCKET``; a no-op outside systemd.

    A socket that cannot be reached is logged, never raised: the daemon serves regardless.
    """
    path = env.get(NOTIFY_SOCKET_VARIABLE)
    if not path:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(state.encode(), socket_address(path))
        except OSError as error:
            log.warning("could not notify systemd: %s", error)


def socket_address(path: str) -> str:
    """The ``AF_UNIX`` address of ``path``: ``@name`` is ``name`` in the abstract namespace."""
    return "\0" + path[1:] if path.startswith("@") else path
