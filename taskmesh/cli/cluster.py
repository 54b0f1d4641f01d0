"""``taskmesh up``: a local cluster from a topology file, on an embedded PostgreSQL by default."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskmesh.cli.shared import default_state_file, read_state
from taskmesh.common.command_line import EXIT_OK
from taskmesh.common.embedded_postgres import EmbeddedPostgres, default_base_dir
from taskmesh.common.topology import LedgerConfig, Topology, load_topology
from taskmesh.local_cluster import LocalCluster

if TYPE_CHECKING:
    from taskmesh.cli.shared import Subcommands

DEFAULT_TOPOLOGY = Path("config/topology.yaml")


def add_cluster_commands(commands: Subcommands) -> None:
    """Register ``taskmesh up``."""
    up = commands.add_parser(
        "up", help="run a whole cluster locally (master, regions, workers) until Ctrl-C"
    )
    up.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY, help="topology file")
    up.add_argument("--state-file", type=Path, help="where to write the cluster's addresses")
    up.add_argument("--log-dir", type=Path, help="daemon logs (default: beside the state file)")
    up.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="the daemons' log lines: human text (default) or one JSON object per line",
    )
    up.set_defaults(handler=run_up)
    show = commands.add_parser("cluster", help="print the addresses of the running `taskmesh up`")
    show.add_argument("--state-file", type=Path, help="state file written by `taskmesh up`")
    show.add_argument("--rest", action="store_true", help="print only the REST base URL")
    show.set_defaults(handler=show_cluster)


def run_up(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Start the ledger and every daemon, print their addresses, supervise until signalled."""
    topology = load_topology(args.topology, environ=env)
    state_file: Path = args.state_file or default_state_file(env)
    log_dir: Path = args.log_dir or state_file.parent / "logs"
    with _ledger(topology, env) as database_url:
        _migrate(database_url)
        cluster = LocalCluster(
            topology,
            args.topology.resolve(),
            database_url,
            log_dir,
            state_file,
            log_format=args.log_format,
        )
        asyncio.run(_serve(cluster))
    return EXIT_OK


@contextlib.contextmanager
def _ledger(topology: Topology, env: Mapping[str, str]) -> Iterator[str]:
    """The configured ledger URL, or an embedded PostgreSQL started (and stopped) for us."""
    if topology.ledger.url:
        yield topology.ledger.url
        return
    base_dir = topology.ledger.data_dir or default_base_dir(env, is_root=os.geteuid() == 0)
    server = EmbeddedPostgres.persistent(base_dir)
    was_running = server.is_running()
    url = server.start()
    print(
        f"ledger     {LedgerConfig(url=url).redacted_url} (embedded PostgreSQL in {base_dir})",
        flush=True,
    )
    try:
        yield url
    finally:
        if not was_running:
            server.stop()


def _migrate(database_url: str) -> None:
    from taskmesh.common.ledger.migrations import upgrade  # noqa: PLC0415 - slow import

    upgrade(database_url)


async def _serve(cluster: LocalCluster) -> None:
    """Start the cluster, report it, and supervise it until SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, lambda: asyncio.ensure_future(cluster.stop()))
    print("starting   regions, master and workers ...", flush=True)
    await cluster.start()
    _report(cluster)
    await cluster.supervise()
    print("stopped    every daemon exited", flush=True)


def show_cluster(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Print the running cluster's addresses (or only its REST base URL)."""
    state_file: Path = args.state_file or default_state_file(env)
    state = read_state(state_file)
    print(state["master"]["rest"] if args.rest else format_addresses(state, state_file))
    return EXIT_OK


def _report(cluster: LocalCluster) -> None:
    lines = [format_addresses(cluster.state(), cluster.state_file)]
    lines.append("ready      press Ctrl-C to stop the cluster")
    print("\n".join(lines), file=sys.stdout, flush=True)


def format_addresses(state: Mapping[str, Any], state_file: Path) -> str:
    """Every daemon's addresses, one per line."""
    lines = [
        f"master     grpc {state['master']['grpc']}   http {state['master']['http']}",
        f"REST       {state['master']['rest']}",
    ]
    lines += [
        f"region     {name:<10} grpc {addresses['grpc']}   http {addresses['http']}"
        for name, addresses in state["regions"].items()
    ]
    lines += [
        f"worker     {name:<14} http {addresses.get('http', '-')}   "
        f"grpc {addresses.get('grpc', '-')}"
        for name, addresses in state["workers"].items()
    ]
    lines += [f"state      {state_file}", f"logs       {state['logs']}"]
    return "\n".join(lines)
