"""What every ``taskmesh`` subcommand shares: the subparsers type, finding the running cluster."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskmesh.common.embedded_postgres import process_alive
from taskmesh.common.errors import TaskmeshError

if TYPE_CHECKING:
    from taskmesh.client import Client

    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]

STATE_FILE_VARIABLE = "TASKMESH_STATE_FILE"
MASTER_VARIABLE = "TASKMESH_MASTER"
TOKEN_FILE_VARIABLE = "TASKMESH_TOKEN_FILE"


def default_state_file(env: Mapping[str, str]) -> Path:
    """Where `taskmesh up` writes the cluster's addresses: ``$XDG_STATE_HOME/taskmesh``."""
    if env.get(STATE_FILE_VARIABLE):
        return Path(env[STATE_FILE_VARIABLE])
    state_home = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME", "~")) / ".local/state")
    return Path(state_home).expanduser() / "taskmesh" / "cluster.json"


def add_master_options(parser: argparse.ArgumentParser) -> None:
    """The options that say where the master is."""
    parser.add_argument(
        "--master",
        metavar="HOST:PORT",
        help=f"master gRPC address (default: ${MASTER_VARIABLE}, else the state file of "
        "a running `taskmesh up`)",
    )
    parser.add_argument("--state-file", type=Path, help="state file written by `taskmesh up`")
    parser.add_argument(
        "--token-file",
        type=Path,
        help=f"file holding the master's bearer token (default: ${TOKEN_FILE_VARIABLE})",
    )


def master_token(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    """The bearer token: the first non-comment line of --token-file or $TASKMESH_TOKEN_FILE."""
    path = args.token_file or (
        Path(env[TOKEN_FILE_VARIABLE]) if env.get(TOKEN_FILE_VARIABLE) else None
    )
    if path is None:
        return None
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise TaskmeshError(f"--token-file: cannot read {path}: {error}") from None
    tokens = [line for line in lines if line and not line.startswith("#")]
    if not tokens:
        raise TaskmeshError(f"--token-file: {path} holds no token")
    return tokens[0]


def master_client(args: argparse.Namespace, env: Mapping[str, str]) -> Client:
    """A client of the master the options name, sending the token they give (if any)."""
    from taskmesh.client import Client as MasterClient  # noqa: PLC0415 - grpc is slow to import

    return MasterClient(master_address(args, env), token=master_token(args, env))


def read_state(path: Path) -> dict[str, Any]:
    """The state a running `taskmesh up` wrote; a clear error when there is none."""
    import json  # noqa: PLC0415 - only the commands that need it pay for it

    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise TaskmeshError(
            f"no running cluster found (no state file at {path}); start one with "
            "`taskmesh up`, or give the master's address with --master HOST:PORT"
        ) from None
    pid = state.get("supervisor_pid")
    if isinstance(pid, int) and not process_alive(pid):
        raise TaskmeshError(
            f"the cluster recorded in {path} is not running (its supervisor, pid {pid}, "
            "is gone); start one with `taskmesh up`"
        )
    return state


def master_address(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    """--master, then $TASKMESH_MASTER, then the running cluster's state file."""
    if args.master:
        return str(args.master)
    if env.get(MASTER_VARIABLE):
        return env[MASTER_VARIABLE]
    state = read_state(args.state_file or default_state_file(env))
    return str(state["master"]["grpc"])
