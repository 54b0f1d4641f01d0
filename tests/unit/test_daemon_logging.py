"""How a daemon sets up logging: stderr, INFO, one format; never over a configuration."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from taskmesh.common.daemon_logging import LOG_FORMAT, configure_logging


@contextlib.contextmanager
def bare_root_logger() -> Iterator[logging.Logger]:
    """The root logger without handlers (pytest's included) at WARNING, put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers, root.level
    root.handlers = []
    root.setLevel(logging.WARNING)
    try:
        yield root
    finally:
        root.handlers = handlers
        root.setLevel(level)


def test_an_unconfigured_process_logs_info_to_stderr() -> None:
    """One stream handler on stderr, in ``LOG_FORMAT``."""
    with bare_root_logger() as root:
        configure_logging()
        (handler,) = root.handlers
        level = root.level
    assert isinstance(handler, logging.StreamHandler)
    assert handler.stream is sys.stderr
    assert handler.formatter is not None
    assert handler.formatter._fmt == LOG_FORMAT
    assert level == logging.INFO


def test_a_configured_process_is_left_as_it_is() -> None:
    """Whoever configured logging first (a test, an embedding program) keeps it."""
    existing = logging.NullHandler()
    with bare_root_logger() as root:
        root.addHandler(existing)
        configure_logging()
        handlers, level = list(root.handlers), root.level
    assert handlers == [existing]
    assert level == logging.WARNING
