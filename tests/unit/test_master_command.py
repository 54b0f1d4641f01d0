"""The ``taskmesh master`` command: options, and configuration errors before anything starts."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from taskmesh.common.errors import ConfigError
from taskmesh.common.topology import Address
from taskmesh.master.command import announce, register_cli, run_master
from taskmesh.master.daemon import BoundAddresses

TOPOLOGY = """
regions:
  - name: eu
  - name: us
"""


def parser() -> argparse.ArgumentParser:
    """A ``taskmesh``-like parser with only the master command."""
    root = argparse.ArgumentParser(prog="taskmesh")
    register_cli(root.add_subparsers(dest="command", required=True))
    return root


def test_the_command_parses_its_options() -> None:
    """Region routes and listen addresses become values; the handler is set."""
    args = parser().parse_args(
        [
            "master",
            "--topology",
            "t.yaml",
            "--database-url",
            "postgresql://x/y",
            "--region",
            "eu=127.0.0.1:5001",
            "--region",
            "us=[::1]:5002",
            "--grpc-address",
            "0.0.0.0:50051",
        ]
    )
    assert args.handler is run_master
    assert dict(args.region) == {"eu": "127.0.0.1:5001", "us": "[::1]:5002"}
    assert args.grpc_address == Address("0.0.0.0", 50051)
    assert args.http_address is None


@pytest.mark.parametrize(
    "argv",
    [
        ["master"],
        ["master", "--topology", "t.yaml", "--region", "eu"],
        ["master", "--topology", "t.yaml", "--region", "eu=nowhere"],
        ["master", "--topology", "t.yaml", "--http-address", "80"],
    ],
)
def test_bad_options_are_usage_errors(argv: list[str]) -> None:
    """argparse exits 2."""
    with pytest.raises(SystemExit) as raised:
        parser().parse_args(argv)
    assert raised.value.code == 2


def test_a_ledger_url_is_required(tmp_path: Path) -> None:
    """Without a flag, variable or ledger.url the command says where to give one."""
    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY)
    args = parser().parse_args(["master", "--topology", str(topology)])
    with pytest.raises(ConfigError, match="--database-url"):
        run_master(args, {})


def test_a_region_route_must_name_a_topology_region(tmp_path: Path) -> None:
    """``--region mars=...`` is refused before anything starts."""
    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY)
    argv = ["master", "--topology", str(topology), "--region", "mars=127.0.0.1:1"]
    with pytest.raises(ConfigError, match="mars"):
        run_master(parser().parse_args(argv), {"TASKMESH_DATABASE_URL": "postgresql://x/y"})


def test_the_ready_line(capsys: pytest.CaptureFixture[str]) -> None:
    """One line with both bound addresses."""
    announce(BoundAddresses(Address("127.0.0.1", 5), Address("::1", 6)), {})
    assert capsys.readouterr().out == "READY grpc=127.0.0.1:5 http=[::1]:6\n"
