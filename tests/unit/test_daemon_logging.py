"""How a daemon sets up logging: stderr, INFO, JSON lines or text; never over a configuration."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
from collections.abc import Callable, Iterator

from taskmesh.common.daemon_logging import (
    LOG_FORMAT,
    TextFormatter,
    configure_logging,
    log_context,
    run_fields,
)


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
        configure_logging("text")
        (handler,) = root.handlers
        level = root.level
    assert isinstance(handler, logging.StreamHandler)
    assert handler.stream is sys.stderr
    assert handler.formatter is not None
    assert isinstance(handler.formatter, TextFormatter)
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


def logged_lines(log_format: str, log: Callable[[logging.Logger], None]) -> list[str]:
    """What ``log`` writes through a daemon's logging set up as ``log_format``."""
    output = io.StringIO()
    with bare_root_logger():
        configure_logging(log_format, output, daemon="region", region="eu")
        log(logging.getLogger("taskmesh.region.test"))
    return output.getvalue().splitlines()


def test_json_lines_carry_the_daemon_the_context_and_the_run() -> None:
    """One object per line: the daemon's fields, ``log_context``'s and ``run_fields``'s."""

    def log(logger: logging.Logger) -> None:
        logger.info("plain")
        with log_context(worker="w-1"):
            logger.warning("run %s started", "r-1", extra=run_fields("r-1", "t-1", epoch=3))
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")

    plain, about_run, failure = (json.loads(line) for line in logged_lines("json", log))
    assert plain["message"] == "plain"
    assert (plain["level"], plain["logger"]) == ("INFO", "taskmesh.region.test")
    assert (plain["daemon"], plain["region"]) == ("region", "eu")
    assert "run_id" not in plain
    assert "worker" not in plain
    assert about_run["message"] == "run r-1 started"
    fields = {key: about_run[key] for key in ("run_id", "task_id", "epoch", "worker", "region")}
    assert fields == {
        "run_id": "r-1",
        "task_id": "t-1",
        "epoch": "3",
        "worker": "w-1",
        "region": "eu",
    }
    assert "ValueError: boom" in failure["exception"]


def test_auto_writes_json_when_not_on_a_terminal() -> None:
    (line,) = logged_lines("auto", lambda logger: logger.info("hello"))
    assert json.loads(line)["message"] == "hello"


def test_text_lines_append_the_fields() -> None:
    (line,) = logged_lines("text", lambda logger: logger.info("x", extra=run_fields("r-9")))
    assert line.endswith("INFO taskmesh.region.test: x [daemon=region region=eu run_id=r-9]")
