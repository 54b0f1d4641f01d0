"""``taskmesh worker``: the worker's entry point, and the only place it handles signals.

``register_cli`` adds the subcommand to the ``taskmesh`` parser; its handler loads the topology
and runs ``serve_worker``, then prints ``READY http=HOST:PORT grpc=HOST:PORT`` on stdout (what
``taskmesh up`` waits for) and tells systemd ``READY=1``. The first SIGTERM or SIGINT drains
the worker (bounded by the pool's ``shutdown_timeout``); a second one stops it at once, killing
what still runs.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from taskmesh.common.command_line import address_argument
from taskmesh.common.daemon_logging import add_log_format_option, configure_logging
from taskmesh.common.errors import ConfigError
from taskmesh.common.readiness import announce_ready
from taskmesh.common.signals import two_stage_stop
from taskmesh.common.systemd import WatchdogConfig, watchdog_config
from taskmesh.common.topology import Address, Topology, load_topology
from taskmesh.worker.settings import WorkerSettings, default_worker_id

if TYPE_CHECKING:
    from taskmesh.worker.daemon import Worker

    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]


async def serve_worker(
    topology: Topology,
    region: str,
    *,
    slots: int | None = None,
    worker_id: str | None = None,
    region_address: Address | None = None,
    http_address: Address | None = None,
    grpc_address: Address | None = None,
    on_ready: Callable[[Worker], None] | None = None,
    handle_signals: bool = True,
    watchdog: WatchdogConfig | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Run one worker of ``region`` until SIGTERM/SIGINT, then drain and return.

    Arguments given override the topology. ``on_ready`` gets the worker once its HTTP endpoint
    is bound (``worker.http_address``); without ``handle_signals`` the caller stops it with
    ``worker.stop()``. ``watchdog``: systemd's, when it runs us. ``environ`` is where the
    policy's ``env`` allow-list takes values from (none given: the allow-list passes nothing).
    """
    settings = WorkerSettings.from_topology(
        topology,
        region,
        slots=slots,
        worker_id=worker_id,
        region_address=region_address,
        http=http_address,
        grpc=grpc_address,
        environ=environ or {},
    )
    # Imported here: aiohttp and grpc cost ~0.5 s, which `taskmesh --help` should not pay.
    from taskmesh.worker.daemon import Worker  # noqa: PLC0415

    worker = Worker(settings, watchdog=watchdog)
    if not handle_signals:
        await worker.run(on_ready)
        return
    # The signal's name is the reason the worker gives its region for draining.
    async with two_stage_stop(
        lambda number: worker.stop(number.name),
        lambda number: worker.stop(number.name, force=True),
    ):
        await worker.run(on_ready)


def register_cli(commands: Subcommands) -> None:
    """Add ``taskmesh worker`` to the ``taskmesh`` command's subparsers."""
    parser = commands.add_parser("worker", help="run one worker of a region")
    # Not required by argparse: `taskmesh worker drain ID` shares this parser; checked below.
    parser.add_argument("--region", help="name of the region to join (required)")
    parser.add_argument("--topology", type=Path, help="topology file (required)")
    parser.add_argument(
        "--slots", type=_positive, help="concurrent runs (default: the region's workers.slots)"
    )
    parser.add_argument(
        "--id", dest="worker_id", help="worker id, unique in the region (default: HOSTNAME-PID)"
    )
    parser.add_argument(
        "--region-address",
        type=address_argument,
        metavar="HOST:PORT",
        help="the region's bound gRPC address (default: the topology's; required if its port is 0)",
    )
    parser.add_argument(
        "--http-address",
        type=address_argument,
        metavar="HOST:PORT",
        help="/healthz, /readyz and /metrics listener (default: the region's workers.http)",
    )
    parser.add_argument(
        "--grpc-address",
        type=address_argument,
        metavar="HOST:PORT",
        help="gRPC health service listener (default: 127.0.0.1 and a free port)",
    )
    add_log_format_option(parser)
    parser.set_defaults(handler=run_worker_command)


def run_worker_command(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """The ``taskmesh worker`` handler: serve until a signal, then exit 0."""
    given = {"--region": args.region, "--topology": args.topology}
    problems = [f"{option} is required to run a worker" for option, v in given.items() if not v]
    if problems:
        raise ConfigError(problems, "taskmesh worker")
    worker_id = args.worker_id or default_worker_id()
    configure_logging(args.log_format, daemon="worker", region=args.region, worker=worker_id)
    topology = load_topology(args.topology, environ=env)
    asyncio.run(
        serve_worker(
            topology,
            args.region,
            slots=args.slots,
            worker_id=worker_id,
            region_address=args.region_address,
            http_address=args.http_address,
            grpc_address=args.grpc_address,
            on_ready=lambda worker: announce(worker, env),
            watchdog=watchdog_config(env),
            environ=env,
        )
    )
    return 0


def announce(worker: Worker, env: Mapping[str, str]) -> None:
    """Print the READY line a supervisor reads, and tell systemd when it runs us."""
    announce_ready(env, http=worker.http_address, grpc=worker.grpc_address)


def _positive(text: str) -> int:
    """An argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
