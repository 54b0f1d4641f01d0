"""``python -m taskmesh.master --topology FILE``: the master without the ``taskmesh`` command."""

from __future__ import annotations

import argparse
import os
import sys

from taskmesh.common.errors import ConfigError, TaskmeshError
from taskmesh.common.topology import format_problems
from taskmesh.master.command import add_arguments, run_master


def main() -> int:
    """Parse the options and run the master in the foreground."""
    parser = argparse.ArgumentParser(prog="python -m taskmesh.master")
    add_arguments(parser)
    args = parser.parse_args()
    try:
        return run_master(args, os.environ)
    except ConfigError as error:
        print(format_problems(error), file=sys.stderr)
        return 2
    except TaskmeshError as error:
        print(f"taskmesh master: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
