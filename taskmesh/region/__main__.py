"""``python -m taskmesh.region --name NAME --topology FILE``: the region without ``taskmesh``."""

from __future__ import annotations

import os
import sys

from taskmesh.common.command_line import run_module
from taskmesh.region.command import add_arguments, run_region


def main() -> int:
    """Parse the options and run the region in the foreground."""
    return run_module("region", add_arguments, run_region, os.environ)


if __name__ == "__main__":
    sys.exit(main())
