"""What the daemon commands share: address options, the ledger URL, ``python -m`` exit codes."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import pytest

from taskmesh.common.command_line import (
    add_database_url_option,
    add_listen_options,
    address_argument,
    ledger_url,
    run_module,
)
from taskmesh.common.errors import ConfigError, TaskmeshError
from taskmesh.common.topology import Address, LedgerConfig, Topology


def parser() -> argparse.ArgumentParser:
    """A daemon-like parser with the shared options only."""
    parser = argparse.ArgumentParser(prog="daemon")
    parser.add_argument("--topology", type=Path, default=Path("t.yaml"))
    add_database_url_option(parser)
    add_listen_options(parser)
    return parser


def test_listen_addresses_parse_into_addresses() -> None:
    """``HOST:PORT`` and ``[IPv6]:PORT``; absent means the topology's."""
    args = parser().parse_args(["--grpc-address", "[::1]:5", "--http-address", "0.0.0.0:6"])
    assert (args.grpc_address, args.http_address) == (Address("::1", 5), Address("0.0.0.0", 6))
    assert parser().parse_args([]).grpc_address is None


@pytest.mark.parametrize("text", ["80", "host:", "host:99999"])
def test_a_bad_address_is_an_argument_error(text: str) -> None:
    """argparse turns it into a usage error naming the option."""
    with pytest.raises(argparse.ArgumentTypeError):
        address_argument(text)


def test_the_flag_wins_over_the_topology() -> None:
    """``--database-url`` first, then ``ledger.url`` (which the environment fills)."""
    topology = Topology(regions=(), ledger=LedgerConfig(url="postgresql://topology/db"))
    flagged = parser().parse_args(["--database-url", "postgresql://flag/db"])
    assert ledger_url(flagged, topology) == "postgresql://flag/db"
    assert ledger_url(parser().parse_args([]), topology) == "postgresql://topology/db"


def test_without_a_ledger_url_the_error_says_where_to_give_one() -> None:
    """The problem names the flag, the variable and the key; the source is the file."""
    with pytest.raises(ConfigError, match="--database-url") as raised:
        ledger_url(parser().parse_args([]), Topology(regions=()))
    assert "TASKMESH_DATABASE_URL" in raised.value.problems[0]
    assert raised.value.source == "t.yaml"


@pytest.mark.parametrize(
    ("error", "status", "stderr"),
    [
        (ConfigError(["ledger.url: bad"], "t.yaml"), 2, "ledger.url: bad"),
        (TaskmeshError("the ledger is gone"), 1, "taskmesh master: the ledger is gone\n"),
    ],
)
def test_python_m_maps_errors_to_exit_statuses(
    error: Exception,
    status: int,
    stderr: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A configuration problem exits 2, any other taskmesh error 1, each said on stderr."""
    monkeypatch.setattr("sys.argv", ["python -m taskmesh.master"])

    def handler(args: argparse.Namespace, env: Mapping[str, str]) -> int:
        raise error

    assert run_module("master", add_listen_options, handler, {}) == status
    assert stderr in capsys.readouterr().err


def test_python_m_passes_options_and_environment_to_the_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The handler's status is the module's."""
    monkeypatch.setattr("sys.argv", ["python -m taskmesh.region", "--grpc-address", "h:1"])
    seen: list[tuple[Address, Mapping[str, str]]] = []

    def handler(args: argparse.Namespace, env: Mapping[str, str]) -> int:
        seen.append((args.grpc_address, env))
        return 0

    assert run_module("region", add_listen_options, handler, {"A": "1"}) == 0
    assert seen == [(Address("h", 1), {"A": "1"})]
