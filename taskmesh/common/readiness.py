"""The READY line: how a daemon tells its supervisor that it serves, and where.

Once its listeners are bound, every daemon prints one line ``READY key=host:port ...`` on stdout
(``taskmesh up`` reads the bound addresses from it, so topology ports of 0 work) and tells
systemd ``READY=1`` when systemd runs it.
"""

from __future__ import annotations

from collections.abc import Mapping

from taskmesh.common.systemd import notify_systemd

READY_PREFIX = "READY "


def announce_ready(env: Mapping[str, str], **addresses: object) -> None:
    """Print the READY line naming ``addresses``, then notify systemd (if it runs us)."""
    print(ready_line(**addresses), flush=True)
    notify_systemd(env, "READY=1")


def ready_line(**addresses: object) -> str:
    """``READY grpc=127.0.0.1:5 http=[::1]:6`` for ``grpc=..., http=...``, in that order."""
    return READY_PREFIX + " ".join(f"{key}={value}" for key, value in addresses.items())


def parse_ready_line(line: str) -> dict[str, str]:
    """``READY grpc=127.0.0.1:5 http=127.0.0.1:6`` → ``{"grpc": ..., "http": ...}``."""
    items = (item.partition("=") for item in line[len(READY_PREFIX) :].split())
    return {key: value for key, _, value in items}
