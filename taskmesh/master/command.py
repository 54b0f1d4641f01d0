"""Entry points of the master: ``serve_master`` and the ``taskmesh master`` command.

This is the only place of the master that handles signals and reads the environment. SIGTERM
or SIGINT asks for a graceful shutdown (exit 0 once drained); a second one cancels at once.
Importing this module is cheap: the daemon (gRPC, aiohttp, SQLAlchemy) is imported when run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from taskmesh.common.command_line import (
    EXIT_OK,
    add_database_url_option,
    add_listen_options,
    address_argument,
    ledger_url,
)
from taskmesh.common.daemon_logging import add_log_format_option, configure_logging
from taskmesh.common.errors import ConfigError, LedgerUnavailableError
from taskmesh.common.readiness import announce_ready
from taskmesh.common.signals import two_stage_stop
from taskmesh.common.systemd import WatchdogConfig, watchdog_config
from taskmesh.common.topology import Address, Topology, load_topology, parse_address

if TYPE_CHECKING:
    from taskmesh.common.ledger import Ledger
    from taskmesh.master.daemon import BoundAddresses

    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]

log = logging.getLogger(__name__)

EXIT_FORCED = 1  # a second signal stopped the master without draining


async def serve_master(
    topology: Topology,
    database_url: str,
    *,
    grpc_address: Address | str | None = None,
    http_address: Address | str | None = None,
    region_addresses: Mapping[str, str] | None = None,
    on_ready: Callable[[BoundAddresses], None] | None = None,
    watchdog: WatchdogConfig | None = None,
) -> None:
    """Run a master until SIGTERM/SIGINT, then drain and return.

    Addresses default to the topology's; ``region_addresses`` overrides where regions are
    dialled (a supervisor passes the ports its regions actually bound). The ledger is
    connected with backoff while it is unavailable. ``watchdog``: systemd's, when it runs us.
    """
    from taskmesh.master.daemon import Master  # noqa: PLC0415 (heavy; see the module docstring)

    stopping = asyncio.Event()
    async with _stop_signals(stopping):
        ledger = await _connect(database_url, stopping)
        if ledger is None:
            return
        async with ledger:
            master = Master(
                topology,
                ledger,
                grpc_address=_address(grpc_address),
                http_address=_address(http_address),
                region_addresses=region_addresses,
                stopping=stopping,
                watchdog=watchdog,
            )
            await master.serve(on_ready)


async def _connect(url: str, stopping: asyncio.Event) -> Ledger | None:
    """The ledger, retried with backoff while unavailable; None if stopped first."""
    from taskmesh.common.ledger import Ledger  # noqa: PLC0415 (heavy; see the module docstring)
    from taskmesh.common.retry_policies import ledger_backoff  # noqa: PLC0415

    backoff = ledger_backoff()
    while not stopping.is_set():
        try:
            return await Ledger.connect(url, application_name="taskmesh-master")
        except LedgerUnavailableError as error:
            pause = backoff.next_delay()
            log.warning("the ledger is unavailable, retrying in %.1fs: %s", pause, error)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await stopping.wait()
    return None


def _stop_signals(stopping: asyncio.Event) -> AbstractAsyncContextManager[None]:
    """First SIGTERM/SIGINT sets ``stopping``; a second cancels the calling task."""
    task = asyncio.current_task()

    def force(_: signal.Signals) -> None:
        """Stop now, without draining: ``run_master`` exits ``EXIT_FORCED``."""
        if task is not None:
            task.cancel()

    return two_stage_stop(lambda _: stopping.set(), force)


def _address(value: Address | str | None) -> Address | None:
    """An address given as text or ``Address``."""
    return parse_address(value) if isinstance(value, str) else value


def register_cli(commands: Subcommands) -> None:
    """Add ``taskmesh master --topology FILE [--database-url URL] [--region NAME=HOST:PORT]``."""
    parser = commands.add_parser("master", help="run the master daemon")
    add_arguments(parser)
    parser.set_defaults(handler=run_master)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The master's command-line options."""
    parser.add_argument("--topology", type=Path, required=True, help="topology file")
    add_database_url_option(parser)
    parser.add_argument(
        "--region",
        action="append",
        default=[],
        type=_region_address,
        metavar="NAME=HOST:PORT",
        help="dial region NAME at HOST:PORT instead of its topology address (repeatable)",
    )
    add_listen_options(parser)
    add_log_format_option(parser)


def run_master(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run the master in the foreground; prints ``READY grpc=... http=...`` once serving."""
    topology = load_topology(args.topology, environ=env)
    url = ledger_url(args, topology)
    regions = dict(args.region)
    unknown = sorted(set(regions) - set(topology.region_names))
    if unknown:
        raise ConfigError([f"--region: no region {name!r} in the topology" for name in unknown])
    configure_logging(args.log_format, daemon="master")
    serving = serve_master(
        topology,
        url,
        grpc_address=args.grpc_address,
        http_address=args.http_address,
        region_addresses=regions,
        on_ready=lambda bound: announce(bound, env),
        watchdog=watchdog_config(env),
    )
    try:
        asyncio.run(serving)
    except asyncio.CancelledError:
        print("taskmesh master: stopped without draining (second signal)", file=sys.stderr)
        return EXIT_FORCED
    return EXIT_OK


def announce(bound: BoundAddresses, env: Mapping[str, str]) -> None:
    """Print the READY line a supervisor waits for, and tell systemd when it runs us."""
    announce_ready(env, grpc=bound.grpc, http=bound.http)


def _region_address(text: str) -> tuple[str, str]:
    """``NAME=HOST:PORT`` as (name, address)."""
    name, equals, address = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=HOST:PORT, got {text!r}")
    return name, str(address_argument(address))
