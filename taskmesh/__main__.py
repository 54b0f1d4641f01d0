"""``python -m taskmesh``: the same as the ``taskmesh`` command."""

import sys

from taskmesh.cli import main

sys.exit(main())
