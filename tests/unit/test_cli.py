"""The ``taskmesh`` command's parsing, option precedence and exit statuses (no server started).

The ``taskmesh db`` tests that start PostgreSQL live in tests/integration/test_embedded_postgres.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from taskmesh.cli import build_parser, ledger_options, main, run_handler
from taskmesh.common.embedded_postgres import default_base_dir
from taskmesh.common.errors import ConfigError, NotFoundError

TOPOLOGY = """
ledger:
  url: {url}
  data_dir: {data_dir}
regions:
  - name: eu
"""


def write_topology(directory: Path, url: str = "null", data_dir: str = "null") -> Path:
    """A minimal valid topology file."""
    path = directory / "topology.yaml"
    path.write_text(TOPOLOGY.format(url=url, data_dir=data_dir))
    return path


def options(argv: list[str], env: Mapping[str, str]) -> tuple[str | None, Path]:
    """The ledger URL and data dir the CLI would use for ``argv``."""
    resolved = ledger_options(build_parser().parse_args(argv), env)
    return resolved.url, resolved.data_dir


def test_db_url_when_stopped_exits_1_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "url", "--data-dir", str(tmp_path)], env={}) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert "not running" in captured.err
    assert "taskmesh db start" in captured.err


def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("taskmesh")
    result = subprocess.run(
        [str(script), "db", "url", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 1
    assert "not running" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_error_exits_2_with_one_problem_per_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def invalid(args: argparse.Namespace, env: Mapping[str, str]) -> int:
        raise ConfigError(["ledger.url: bad", "regions: missing"], "t.yaml")

    assert run_handler(invalid, argparse.Namespace(), {}) == 2
    assert capsys.readouterr().err.splitlines() == [
        "t.yaml: ledger.url: bad",
        "t.yaml: regions: missing",
    ]


def test_invalid_topology_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text("ledger:\n  url: 5\n  data_dir: 7\n")

    assert main(["db", "url", "--topology", str(path)], env={}) == 2

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 2
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_other_taskmesh_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    def missing(args: argparse.Namespace, env: Mapping[str, str]) -> int:
        raise NotFoundError("no such task: t-1")

    assert run_handler(missing, argparse.Namespace(), {}) == 1
    assert capsys.readouterr().err == "taskmesh: no such task: t-1\n"


@pytest.mark.parametrize("argv", [[], ["db"], ["db", "restart"], ["nonsense"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv, env={}) == 2
    assert "usage: taskmesh" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "--help"], env={}) == 0
    usage = capsys.readouterr().out
    assert all(action in usage for action in ("start", "stop", "url", "upgrade"))


def test_data_dir_flag_beats_topology_beats_default(tmp_path: Path) -> None:
    topology = write_topology(tmp_path, data_dir="ledger-here")
    flag = ["--data-dir", "/srv/ledger"]

    assert options(["db", "start", *flag, "--topology", str(topology)], {})[1] == Path(
        "/srv/ledger"
    )
    assert options(["db", "start", "--topology", str(topology)], {})[1] == tmp_path / "ledger-here"
    assert options(["db", "start"], {"XDG_DATA_HOME": "/xdg", "HOME": "/home/u"})[1] in (
        Path("/var/lib/taskmesh"),
        Path("/xdg/taskmesh"),
    )


def test_url_flag_beats_environment_beats_topology(tmp_path: Path) -> None:
    topology = write_topology(tmp_path, url="postgresql://file@db/taskmesh")
    env = {"TASKMESH_DATABASE_URL": "postgresql://env@db/taskmesh"}
    upgrade = ["db", "upgrade", "--topology", str(topology)]

    assert (
        options([*upgrade, "--url", "postgresql://flag@db/x"], env)[0] == "postgresql://flag@db/x"
    )
    assert options(upgrade, env)[0] == "postgresql://env@db/taskmesh"
    assert options(upgrade, {})[0] == "postgresql://file@db/taskmesh"
    assert options(["db", "upgrade"], {})[0] is None  # the embedded server, then


def test_default_base_dir() -> None:
    assert default_base_dir({}, is_root=True) == Path("/var/lib/taskmesh")
    assert default_base_dir({"XDG_DATA_HOME": "/xdg"}, is_root=False) == Path("/xdg/taskmesh")
    home = {"HOME": "/home/u", "XDG_DATA_HOME": "relative/ignored"}
    assert default_base_dir(home, is_root=False) == Path("/home/u/.local/share/taskmesh")
