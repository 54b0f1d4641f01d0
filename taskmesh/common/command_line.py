"""What the commands share: exit statuses, the daemons' options and ledger URL, ``python -m``.

``taskmesh`` and ``python -m taskmesh.master|region`` map errors to exit statuses here, in one
place. ``taskmesh master|region|worker`` parse the same kinds of options; each tier's command
module adds only its own options and how it serves.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from taskmesh.common.errors import ConfigError, TaskmeshError
from taskmesh.common.topology import (
    DATABASE_URL_VARIABLE,
    Address,
    InvalidValue,
    format_problems,
    parse_address,
)

if TYPE_CHECKING:
    from taskmesh.common.topology import Topology

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace, Mapping[str, str]], int]


def address_argument(text: str) -> Address:
    """An argparse type: ``HOST:PORT`` as an ``Address``."""
    try:
        return parse_address(text)
    except InvalidValue as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_database_url_option(parser: argparse.ArgumentParser) -> None:
    """``--database-url URL``: the ledger, overriding the environment and the topology."""
    parser.add_argument(
        "--database-url",
        help=f"ledger URL (default: ${DATABASE_URL_VARIABLE}, then the topology's ledger.url)",
    )


def add_listen_options(parser: argparse.ArgumentParser) -> None:
    """``--grpc-address`` and ``--http-address``: where to listen instead of the topology's."""
    parser.add_argument(
        "--grpc-address", type=address_argument, help="gRPC listen address (default: topology)"
    )
    parser.add_argument(
        "--http-address", type=address_argument, help="HTTP listen address (default: topology)"
    )


def ledger_url(args: argparse.Namespace, topology: Topology) -> str:
    """``--database-url``, else the topology's ``ledger.url``, else a ``ConfigError``."""
    url: str | None = args.database_url or topology.ledger.url
    if not url:
        raise ConfigError(
            [
                "no ledger URL: pass --database-url, set "
                f"{DATABASE_URL_VARIABLE} or ledger.url (`taskmesh db start` prints one)"
            ],
            str(args.topology),
        )
    return url


def run_module(
    tier: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    handler: Handler,
    env: Mapping[str, str],
) -> int:
    """``python -m taskmesh.<tier>``: parse the options, run ``handler``, its exit status."""
    parser = argparse.ArgumentParser(prog=f"python -m taskmesh.{tier}")
    add_arguments(parser)
    return exit_status(handler, parser.parse_args(), env, program=f"taskmesh {tier}")


def exit_status(
    handler: Handler, args: argparse.Namespace, env: Mapping[str, str], *, program: str
) -> int:
    """Run ``handler``; expected errors become exit statuses and messages, not tracebacks.

    A ``ConfigError`` exits 2 with one problem per line on stderr, any other ``TaskmeshError``
    exits 1 with ``program: message``.
    """
    try:
        return handler(args, env)
    except ConfigError as error:
        print(format_problems(error), file=sys.stderr)
        return EXIT_USAGE
    except TaskmeshError as error:
        print(f"{program}: {error}", file=sys.stderr)
        return EXIT_FAILURE
