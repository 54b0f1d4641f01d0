"""Entry points of the region daemon: ``serve_region`` and the ``taskmesh region`` command.

This is the only place in the region that handles signals or reads the environment. SIGTERM
or SIGINT begins a graceful shutdown; a second one cuts its waits short.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from taskmesh.common.errors import ConfigError
from taskmesh.common.topology import (
    DATABASE_URL_VARIABLE,
    Address,
    InvalidValue,
    Topology,
    load_topology,
    parse_address,
)

if TYPE_CHECKING:
    from taskmesh.region.daemon import RegionHandle

    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]

log = logging.getLogger(__name__)

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


async def serve_region(
    topology: Topology,
    name: str,
    database_url: str,
    *,
    grpc_address: Address | None = None,
    http_address: Address | None = None,
    on_ready: Callable[[RegionHandle], None] | None = None,
    handle_signals: bool = True,
) -> None:
    """Run region ``name`` of ``topology`` until SIGTERM/SIGINT (or ``request_shutdown``).

    Addresses default to the topology's; port 0 binds a free port, reported to ``on_ready``
    with a handle that can also stop the region.
    """
    # Imported here: the daemon pulls in SQLAlchemy and gRPC (~2 s), which building the
    # ``taskmesh`` parser must not pay for.
    from taskmesh.region.daemon import RegionDaemon  # noqa: PLC0415

    daemon = RegionDaemon(
        topology.region(name), database_url, grpc_address=grpc_address, http_address=http_address
    )
    loop = asyncio.get_running_loop()
    if handle_signals:
        for number in SHUTDOWN_SIGNALS:
            loop.add_signal_handler(number, daemon.request_shutdown)
    try:
        complete = await daemon.serve(on_ready)
    finally:
        if handle_signals:
            for number in SHUTDOWN_SIGNALS:
                loop.remove_signal_handler(number)
    if not complete:
        log.warning("region %s stopped with work not handed back; the master will reap it", name)


def register_cli(commands: Subcommands) -> None:
    """Add ``taskmesh region --name NAME --topology FILE [--database-url URL]``."""
    parser = commands.add_parser("region", help="run a regional scheduler")
    add_arguments(parser)
    parser.set_defaults(handler=run_region)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The region's command-line options."""
    parser.add_argument("--name", required=True, help="the region's name in the topology")
    parser.add_argument("--topology", type=Path, required=True, help="topology file")
    parser.add_argument(
        "--database-url",
        help=f"ledger URL (default: ${DATABASE_URL_VARIABLE}, then the topology's ledger.url)",
    )
    parser.add_argument(
        "--grpc-address", type=_address, help="gRPC listen address (default: topology)"
    )
    parser.add_argument(
        "--http-address", type=_address, help="HTTP listen address (default: topology)"
    )


def run_region(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run the region in the foreground; prints ``READY grpc=... http=...`` once serving."""
    topology = load_topology(args.topology, environ=env)
    topology.region(args.name)  # NotFoundError names the regions there are
    url = args.database_url or topology.ledger.url
    if not url:
        raise ConfigError(
            [
                "no ledger URL: pass --database-url, set "
                f"{DATABASE_URL_VARIABLE} or ledger.url (`taskmesh db start` prints one)"
            ],
            str(args.topology),
        )
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    serving = serve_region(
        topology,
        args.name,
        url,
        grpc_address=args.grpc_address,
        http_address=args.http_address,
        on_ready=lambda handle: announce(handle, env),
    )
    asyncio.run(serving)
    return 0


def announce(handle: RegionHandle, env: Mapping[str, str]) -> None:
    """Print the READY line a supervisor reads, and tell systemd when it runs us."""
    print(f"READY grpc={handle.grpc_address} http={handle.http_address}", flush=True)
    notify_systemd(env, "READY=1")


def notify_systemd(env: Mapping[str, str], state: str) -> None:
    """Send ``state`` to ``$NOTIFY_SOCKET`` (sd_notify); a no-op outside systemd."""
    path = env.get("NOTIFY_SOCKET")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError as error:
            log.warning("could not notify systemd: %s", error)


def _address(text: str) -> Address:
    """``HOST:PORT`` as an ``Address``."""
    try:
        return parse_address(text)
    except InvalidValue as error:
        raise argparse.ArgumentTypeError(str(error)) from None
