"""``python -m taskmesh.region --name NAME --topology FILE``: the region without ``taskmesh``."""

from __future__ import annotations

import argparse
import os
import sys

from taskmesh.common.errors import ConfigError, TaskmeshError
from taskmesh.common.topology import format_problems
from taskmesh.region.command import add_arguments, run_region


def main() -> int:
    """Parse the options and run the region in the foreground."""
    parser = argparse.ArgumentParser(prog="python -m taskmesh.region")
    add_arguments(parser)
    args = parser.parse_args()
    try:
        return run_region(args, os.environ)
    except ConfigError as error:
        print(format_problems(error), file=sys.stderr)
        return 2
    except TaskmeshError as error:
        print(f"taskmesh region: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
