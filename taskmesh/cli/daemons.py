"""``taskmesh master|region|worker``: each tier registers its own daemon command."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING

from taskmesh.cli.shared import add_master_options, master_client
from taskmesh.common.command_line import EXIT_OK
from taskmesh.common.topology import parse_duration
from taskmesh.master.command import register_cli as register_master
from taskmesh.region.command import register_cli as register_region
from taskmesh.worker.entrypoint import register_cli as register_worker

if TYPE_CHECKING:
    from taskmesh.cli.shared import Subcommands


def add_daemon_commands(commands: Subcommands) -> None:
    """Register the three daemon commands, and ``taskmesh worker drain``."""
    register_master(commands)
    register_region(commands)
    register_worker(commands)
    _add_worker_drain(commands.choices["worker"])


def _add_worker_drain(worker: argparse.ArgumentParser) -> None:
    """``taskmesh worker drain ID [--grace 30s] [--reason TEXT]``: drain a worker remotely."""
    actions = worker.add_subparsers(dest="worker_action", metavar="{drain}")
    drain = actions.add_parser(
        "drain", help="ask a running worker (through the master and its region) to drain"
    )
    drain.add_argument("worker_id", metavar="ID", help="the worker's id")
    drain.add_argument("--reason", default="drain requested by an operator", help="logged")
    drain.add_argument(
        "--grace",
        type=parse_duration,
        help="time to finish running commands (default: the region's shutdown timeout)",
    )
    add_master_options(drain)
    drain.set_defaults(handler=drain_worker)


def drain_worker(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Ask the worker to drain; print the region it is in."""
    with master_client(args, env) as client:
        region = client.drain_worker(args.worker_id, reason=args.reason, grace=args.grace)
    print(f"worker {args.worker_id} of region {region} is draining")
    return EXIT_OK
