"""The ``taskmesh`` command: one small function per subcommand group registers its parser.

This entry point is the only place that reads the environment (``TASKMESH_DATABASE_URL``,
``XDG_DATA_HOME``, ``HOME``); everything below it receives plain values. Expected errors become
exit statuses without a traceback: ``ConfigError`` exits 2 with one problem per line on stderr,
any other ``TaskmeshError`` exits 1 with its message.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence

from taskmesh import __version__
from taskmesh.cli.bench import add_bench_command
from taskmesh.cli.cluster import add_cluster_commands
from taskmesh.cli.daemons import add_daemon_commands
from taskmesh.cli.db import add_db_commands, ledger_options
from taskmesh.cli.health import add_health_command
from taskmesh.cli.schedules import add_schedule_commands
from taskmesh.cli.tasks import add_task_commands
from taskmesh.cli.watch import add_watch_command
from taskmesh.cli.workflows import add_workflow_commands
from taskmesh.common.command_line import EXIT_INTERRUPTED, EXIT_USAGE, Handler, exit_status

__all__ = ["build_parser", "ledger_options", "main", "run_handler"]


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run one ``taskmesh`` command and return its exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_request:
        return exit_request.code if isinstance(exit_request.code, int) else EXIT_USAGE
    handler: Handler = args.handler
    return run_handler(handler, args, os.environ if env is None else env)


def run_handler(handler: Handler, args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Call ``handler``, mapping expected errors to exit statuses and messages on stderr."""
    try:
        return exit_status(handler, args, env, program="taskmesh")
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand; each group adds itself to ``commands``."""
    parser = argparse.ArgumentParser(
        prog="taskmesh", description="A hierarchical distributed task scheduler."
    )
    parser.add_argument("--version", action="version", version=f"taskmesh {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_cluster_commands(commands)
    add_daemon_commands(commands)
    add_task_commands(commands)
    add_schedule_commands(commands)
    add_workflow_commands(commands)
    add_watch_command(commands)
    add_db_commands(commands)
    add_bench_command(commands)
    add_health_command(commands)
    return parser
