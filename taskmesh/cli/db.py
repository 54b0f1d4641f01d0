"""``taskmesh db start|stop|url|upgrade``: the embedded PostgreSQL and the ledger schema."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from taskmesh.common.command_line import EXIT_OK
from taskmesh.common.embedded_postgres import EmbeddedPostgres, default_base_dir
from taskmesh.common.topology import DATABASE_URL_VARIABLE, load_topology

if TYPE_CHECKING:
    from taskmesh.cli.shared import Subcommands


def add_db_commands(commands: Subcommands) -> None:
    """``taskmesh db start|stop|url|upgrade``: the embedded PostgreSQL and the ledger schema."""
    group = commands.add_parser("db", help="manage the embedded PostgreSQL ledger")
    actions = group.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    start = actions.add_parser("start", help="start the embedded PostgreSQL and print its URL")
    stop = actions.add_parser("stop", help="stop the embedded PostgreSQL")
    url = actions.add_parser("url", help="print the URL of the running embedded PostgreSQL")
    upgrade = actions.add_parser("upgrade", help="migrate the ledger schema (default: to head)")
    for parser, handler in (
        (start, db_start),
        (stop, db_stop),
        (url, db_url),
        (upgrade, db_upgrade),
    ):
        _add_ledger_options(parser)
        parser.set_defaults(handler=handler)
    upgrade.add_argument(
        "--url", help=f"ledger URL (default: ${DATABASE_URL_VARIABLE}, topology, embedded server)"
    )
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")


def _add_ledger_options(parser: argparse.ArgumentParser) -> None:
    """The options that say where the ledger is."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="base directory of the embedded PostgreSQL (default: the topology's "
        "ledger.data_dir, else /var/lib/taskmesh as root, else $XDG_DATA_HOME/taskmesh)",
    )
    parser.add_argument("--topology", type=Path, help="topology file to read ledger settings from")


def db_start(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Start the embedded PostgreSQL (a no-op when running) and print its URL."""
    print(_embedded_server(args, env).start())
    return EXIT_OK


def db_stop(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Stop the embedded PostgreSQL, waiting until its processes are gone."""
    server = _embedded_server(args, env)
    state = "Stopped" if server.is_running() else "Nothing was running for"
    server.stop()
    print(f"{state} the embedded PostgreSQL in {server.layout.base_dir}.")
    return EXIT_OK


def db_url(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Print the URL of the running embedded PostgreSQL (exit 1 when it is not running)."""
    print(_embedded_server(args, env).url())
    return EXIT_OK


def db_upgrade(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Migrate the ledger to ``--revision``, starting the embedded server if it is the ledger."""
    # Imported here: Alembic and SQLAlchemy take ~2 s to import, which no other command needs.
    from taskmesh.common.ledger.migrations import upgrade  # noqa: PLC0415

    options = ledger_options(args, env)
    upgrade(options.url or EmbeddedPostgres.persistent(options.data_dir).start(), args.revision)
    print(f"The ledger is at revision {args.revision}.")
    return EXIT_OK


@dataclass(frozen=True)
class LedgerOptions:
    """Where the ledger is: an explicit URL, and the embedded server's base directory."""

    url: str | None
    data_dir: Path


def ledger_options(args: argparse.Namespace, env: Mapping[str, str]) -> LedgerOptions:
    """Resolve the flags, then ``$TASKMESH_DATABASE_URL``, then the topology, then defaults."""
    ledger = load_topology(args.topology, environ=env).ledger if args.topology else None
    url_flag: str | None = getattr(args, "url", None)
    url = url_flag or env.get(DATABASE_URL_VARIABLE) or (ledger.url if ledger else None)
    data_dir: Path | None = args.data_dir or (ledger.data_dir if ledger else None)
    if data_dir is None:
        data_dir = default_base_dir(env, is_root=os.geteuid() == 0)
    return LedgerOptions(url or None, data_dir)


def _embedded_server(args: argparse.Namespace, env: Mapping[str, str]) -> EmbeddedPostgres:
    """The persistent embedded server in ``--data-dir``, ``ledger.data_dir`` or the default."""
    return EmbeddedPostgres.persistent(ledger_options(args, env).data_dir)
