"""The systemd units in config/systemd: verified by systemd itself, and holding what they promise.

``systemd-analyze verify`` parses a unit as systemd would and prints every problem, but exits 0
on mere warnings, so any output fails the test. It also exits 1 when ``ExecStart=`` names a
binary that does not exist here: the units name ``/opt/taskmesh/bin/taskmesh`` (where the
README installs it), so the test verifies copies that name this venv's ``taskmesh`` instead.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "config" / "systemd"
INSTALLED = "/opt/taskmesh/bin/taskmesh"
SERVICES = ("taskmesh-master.service", "taskmesh-region@.service", "taskmesh-worker@.service")
TOPOLOGY = "--topology /etc/taskmesh/topology.yaml"


def directives(name: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, values in order (keys may repeat)."""
    found: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        key, equals, value = line.partition("=")
        if equals and not line.startswith(("#", ";")):
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.fixture
def local_units(tmp_path: Path) -> Path:
    """Copies of the units whose commands name this venv's ``taskmesh``."""
    taskmesh = Path(sys.executable).parent / "taskmesh"
    assert taskmesh.exists(), f"{taskmesh} is missing: `make venv` installs it"
    for unit in UNITS.iterdir():
        text = unit.read_text()
        (tmp_path / unit.name).write_text(text.replace(INSTALLED, str(taskmesh)))
    return tmp_path


def test_systemd_analyze_verify_finds_nothing(local_units: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd"
    names = [*SERVICES, "taskmesh.target"]
    done = subprocess.run(
        [analyze, "verify", *(str(local_units / name) for name in names)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@pytest.mark.parametrize("name", SERVICES)
def test_every_daemon_is_a_notify_service_with_a_watchdog(name: str) -> None:
    unit = directives(name)
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert len(unit["WatchdogSec"]) == 1
    assert unit["Restart"] == ["on-failure"]
    assert unit["PartOf"] == ["taskmesh.target"]
    assert unit["WantedBy"] == ["taskmesh.target"]
    assert unit["User"][0].startswith("taskmesh")
    assert unit["NoNewPrivileges"] == ["yes"]
    (command,) = unit["ExecStart"]
    assert INSTALLED in command
    assert TOPOLOGY in command


@pytest.mark.parametrize("name", SERVICES[:2])
def test_master_and_regions_are_locked_down_and_get_the_ledger_url(name: str) -> None:
    unit = directives(name)
    assert unit["User"] == ["taskmesh"]
    assert unit["EnvironmentFile"] == ["/etc/taskmesh/ledger.env"]
    for key in ("ProtectSystem", "MemoryDenyWriteExecute", "SystemCallFilter", "PrivateDevices"):
        assert key in unit, key
    assert unit["ProtectSystem"] == ["strict"]


def test_workers_run_user_commands_without_ledger_credentials() -> None:
    """Another user than master and regions, no ledger.env, no options that break commands."""
    unit = directives("taskmesh-worker@.service")
    assert unit["User"] == ["taskmesh-worker"]
    assert unit["EnvironmentFile"] == ["-/etc/taskmesh/worker.env"]
    for key in ("MemoryDenyWriteExecute", "SystemCallFilter", "RestrictAddressFamilies"):
        assert key not in unit, f"{key} would break user commands"
    assert unit["ProtectSystem"] == ["full"]
    assert unit["ProtectProc"] == ["invisible"]


def test_a_worker_instance_names_its_region_and_id(tmp_path: Path) -> None:
    """``eu:2`` runs ``taskmesh worker --region eu --id HOST-eu:2``; ``eu`` alone works too.

    The ExecStart line goes through systemd's own escapes (``$$``, ``%%``, ``%H``, ``%i``) and
    then /bin/sh, with an echo standing in for ``taskmesh``.
    """
    (command,) = directives("taskmesh-worker@.service")["ExecStart"]
    fake = tmp_path / "taskmesh"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    host = socket.gethostname()
    for instance, region in (("eu:2", "eu"), ("us-east.1", "us-east.1")):
        line = (
            command.replace("%H", host)
            .replace("%i", instance)
            .replace("$$", "$")
            .replace("%%", "%")
            .replace(INSTALLED, str(fake))
        )
        argv = _split_exec(line)
        output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
        assert output[:5] == ["worker", "--region", region, "--id", f"{host}-{instance}"]


def _split_exec(line: str) -> list[str]:
    """``/bin/sh -c '...' name arg`` split the way systemd splits ExecStart (single quotes)."""
    program, rest = line.split(" -c '", 1)
    script, arguments = rest.rsplit("' ", 1)
    return [program, "-c", script, *arguments.split()]
