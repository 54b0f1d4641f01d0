"""Entry points of the region daemon: ``serve_region`` and the ``taskmesh region`` command.

This is the only place in the region that handles signals or reads the environment. SIGTERM
or SIGINT begins a graceful shutdown; a second one cuts its waits short.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from taskmesh.common.command_line import add_database_url_option, add_listen_options, ledger_url
from taskmesh.common.daemon_logging import add_log_format_option, configure_logging
from taskmesh.common.readiness import announce_ready
from taskmesh.common.signals import two_stage_stop
from taskmesh.common.systemd import WatchdogConfig, watchdog_config
from taskmesh.common.topology import Address, Topology, load_topology

if TYPE_CHECKING:
    from taskmesh.region.daemon import RegionHandle

    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]

log = logging.getLogger(__name__)


async def serve_region(
    topology: Topology,
    name: str,
    database_url: str,
    *,
    grpc_address: Address | None = None,
    http_address: Address | None = None,
    on_ready: Callable[[RegionHandle], None] | None = None,
    handle_signals: bool = True,
    watchdog: WatchdogConfig | None = None,
) -> None:
    """Run region ``name`` of ``topology`` until SIGTERM/SIGINT (or ``request_shutdown``).

    Addresses default to the topology's; port 0 binds a free port, reported to ``on_ready``
    with a handle that can also stop the region. ``watchdog``: systemd's, when it runs us.
    """
    # Imported here: the daemon pulls in SQLAlchemy and gRPC (~2 s), which building the
    # ``taskmesh`` parser must not pay for.
    from taskmesh.region.daemon import RegionDaemon  # noqa: PLC0415

    daemon = RegionDaemon(
        topology.region(name),
        database_url,
        grpc_address=grpc_address,
        http_address=http_address,
        watchdog=watchdog,
    )
    # ``request_shutdown`` is two-staged itself: asked again, it cuts the drain's waits short.
    signals: AbstractAsyncContextManager[None] = (
        two_stage_stop(lambda _: daemon.request_shutdown(), lambda _: daemon.request_shutdown())
        if handle_signals
        else contextlib.nullcontext()
    )
    async with signals:
        complete = await daemon.serve(on_ready)
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
    add_database_url_option(parser)
    add_listen_options(parser)
    add_log_format_option(parser)


def run_region(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run the region in the foreground; prints ``READY grpc=... http=...`` once serving."""
    topology = load_topology(args.topology, environ=env)
    topology.region(args.name)  # NotFoundError names the regions there are
    url = ledger_url(args, topology)
    configure_logging(args.log_format, daemon="region", region=args.name)
    serving = serve_region(
        topology,
        args.name,
        url,
        grpc_address=args.grpc_address,
        http_address=args.http_address,
        on_ready=lambda handle: announce(handle, env),
        watchdog=watchdog_config(env),
    )
    asyncio.run(serving)
    return 0


def announce(handle: RegionHandle, env: Mapping[str, str]) -> None:
    """Print the READY line a supervisor reads, and tell systemd when it runs us."""
    announce_ready(env, grpc=handle.grpc_address, http=handle.http_address)
