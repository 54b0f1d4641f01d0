"""Worker settings from the topology and flags, and the ``taskmesh worker`` parser."""

from __future__ import annotations

import argparse
import os
import socket
from datetime import timedelta

import pytest

from taskmesh.common.errors import ConfigError, NotFoundError
from taskmesh.common.topology import Address, Topology, parse_topology
from taskmesh.worker.entrypoint import register_cli, run_worker_command
from taskmesh.worker.settings import WorkerSettings, default_worker_id


def topology(grpc: str = "10.0.0.5:7000") -> Topology:
    return parse_topology(
        {
            "regions": [
                {
                    "name": "eu",
                    "grpc": grpc,
                    "workers": {
                        "slots": 6,
                        "labels": {"pool": "gpu"},
                        "heartbeat_interval": "250ms",
                        "http": "127.0.0.1:9100",
                        "shutdown_timeout": "7s",
                    },
                }
            ]
        }
    )


def test_settings_come_from_the_regions_worker_pool() -> None:
    settings = WorkerSettings.from_topology(topology(), "eu")
    assert settings.region == "eu"
    assert settings.region_address == "10.0.0.5:7000"
    assert settings.slots == 6
    assert dict(settings.labels) == {"pool": "gpu"}
    assert settings.heartbeat_interval == timedelta(milliseconds=250)
    assert settings.http == Address("127.0.0.1", 9100)
    assert settings.shutdown_timeout == timedelta(seconds=7)
    assert settings.worker_id == default_worker_id()


def test_flags_override_the_topology() -> None:
    settings = WorkerSettings.from_topology(
        topology(),
        "eu",
        slots=2,
        worker_id="w7",
        region_address=Address("127.0.0.1", 5555),
        http=Address("127.0.0.1", 0),
    )
    assert (settings.slots, settings.worker_id) == (2, "w7")
    assert settings.region_address == "127.0.0.1:5555"
    assert settings.http == Address("127.0.0.1", 0)


def test_a_region_port_of_zero_needs_the_bound_address() -> None:
    with pytest.raises(ConfigError, match="--region-address"):
        WorkerSettings.from_topology(topology("127.0.0.1:0"), "eu")
    bound = Address("127.0.0.1", 4242)
    settings = WorkerSettings.from_topology(topology("127.0.0.1:0"), "eu", region_address=bound)
    assert settings.region_address == "127.0.0.1:4242"


def test_an_unknown_region_or_no_slots_is_refused() -> None:
    with pytest.raises(NotFoundError, match="us"):
        WorkerSettings.from_topology(topology(), "us")
    with pytest.raises(ConfigError, match="--slots"):
        WorkerSettings.from_topology(topology(), "eu", slots=0)


def test_the_default_worker_id_is_host_and_pid() -> None:
    assert default_worker_id() == f"{socket.gethostname()}-{os.getpid()}"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="taskmesh")
    register_cli(root.add_subparsers(dest="command", required=True))
    return root


def test_the_worker_subcommand_parses_its_flags() -> None:
    args = parser().parse_args(
        [
            "worker",
            "--region=eu",
            "--topology=t.yaml",
            "--slots=3",
            "--id=w1",
            "--region-address=[::1]:7000",
            "--http-address=0.0.0.0:9100",
        ]
    )
    assert args.handler is run_worker_command
    assert (args.region, str(args.topology), args.slots, args.worker_id) == (
        "eu",
        "t.yaml",
        3,
        "w1",
    )
    assert args.region_address == Address("::1", 7000)
    assert args.http_address == Address("0.0.0.0", 9100)


@pytest.mark.parametrize(
    "flag", ["--slots=0", "--slots=many", "--region-address=nowhere", "--http-address=h:99999"]
)
def test_bad_flags_are_usage_errors(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_request:
        parser().parse_args(["worker", "--region=eu", "--topology=t.yaml", flag])
    assert exit_request.value.code == 2
    assert flag.split("=", maxsplit=1)[0] in capsys.readouterr().err
