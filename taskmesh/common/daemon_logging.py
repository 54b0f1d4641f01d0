"""How every daemon logs: one record per line on stderr, INFO and up, as JSON or as text.

``--log-format json`` writes one JSON object per line (``time``, ``level``, ``logger``,
``message`` and the record's fields), for log shippers; ``text`` writes the human line of
``LOG_FORMAT`` with the fields appended as ``key=value``; ``auto`` (the default) picks text on
a terminal and JSON otherwise. The fields of a line are the daemon's own (``region``,
``worker``), those of the code it runs in (``log_context``) and those passed with the record
(``extra=run_fields(...)``): every line about a run carries its ``run_id`` and ``task_id``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TextIO

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("auto", "json", "text")
FIELDS = ("daemon", "region", "worker", "run_id", "task_id", "epoch")  # in this order

_context: ContextVar[Mapping[str, object]] = ContextVar(
    "taskmesh_log_context", default=MappingProxyType({})
)


def run_fields(run_id: object, task_id: object = None, **more: object) -> dict[str, object]:
    """The ``extra`` of a log call about one run; None values are left out."""
    fields = {"run_id": run_id, "task_id": task_id, **more}
    return {key: str(value) for key, value in fields.items() if value is not None}


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add ``fields`` to every line logged inside the block (and in tasks it creates)."""
    token = _context.set({**_context.get(), **{k: str(v) for k, v in fields.items()}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Puts the daemon's fields and the context's fields on each record (the record's win)."""

    def __init__(self, daemon_fields: Mapping[str, object]) -> None:
        super().__init__()
        self._daemon = {key: str(value) for key, value in daemon_fields.items()}

    def filter(self, record: logging.LogRecord) -> bool:
        """Never drops a record; only adds the fields it does not carry yet."""
        for key, value in {**self._daemon, **_context.get()}.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def record_fields(record: logging.LogRecord) -> dict[str, str]:
    """The known fields a record carries, in ``FIELDS`` order."""
    return {key: str(getattr(record, key)) for key in FIELDS if hasattr(record, key)}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """``{"time", "level", "logger", "message", ...fields, "exception"?}``."""
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **record_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``LOG_FORMAT`` followed by the record's fields as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """The human line, then the fields."""
        line = super().format(record)
        fields = " ".join(f"{key}={value}" for key, value in record_fields(record).items())
        if not fields:
            return line
        head, newline, rest = line.partition("\n")  # a traceback stays below the fields
        return f"{head} [{fields}]{newline}{rest}"


def add_log_format_option(parser: argparse.ArgumentParser) -> None:
    """``--log-format auto|json|text``."""
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="auto",
        help="json: one JSON object per line; text: human lines; auto (default): text on a "
        "terminal, JSON otherwise",
    )


def configure_logging(
    log_format: str = "auto", stream: TextIO | None = None, **daemon_fields: object
) -> None:
    """Log INFO and up to ``stream`` (stderr), unless logging is configured already."""
    root = logging.getLogger()
    if root.handlers:
        return
    output = stream or sys.stderr
    handler = logging.StreamHandler(output)
    json_lines = log_format == "json" or (log_format == "auto" and not output.isatty())
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(ContextFilter(daemon_fields))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
