"""``taskmesh master|region|worker``: each tier registers its own daemon command."""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskmesh.master.command import register_cli as register_master
from taskmesh.region.command import register_cli as register_region
from taskmesh.worker.entrypoint import register_cli as register_worker

if TYPE_CHECKING:
    from taskmesh.cli.shared import Subcommands


def add_daemon_commands(commands: Subcommands) -> None:
    """Register the three daemon commands."""
    register_master(commands)
    register_region(commands)
    register_worker(commands)
