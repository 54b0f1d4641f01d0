"""How every daemon logs: one line per record on stderr, INFO and up."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging() -> None:
    """Log INFO and up to stderr in ``LOG_FORMAT``, unless logging is configured already."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
