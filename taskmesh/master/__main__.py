"""``python -m taskmesh.master --topology FILE``: the master without the ``taskmesh`` command."""

from __future__ import annotations

import os
import sys

from taskmesh.common.command_line import run_module
from taskmesh.master.command import add_arguments, run_master


def main() -> int:
    """Parse the options and run the master in the foreground."""
    return run_module("master", add_arguments, run_master, os.environ)


if __name__ == "__main__":
    sys.exit(main())
