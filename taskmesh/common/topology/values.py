"""Parsers for the scalar values of a topology file: durations, addresses, counts, URLs, names.

Each parser takes the raw YAML value and returns the runtime value, or raises ``InvalidValue``
whose text says what was expected and what was found (``expected ..., got ...``). The caller
prefixes the key path, so a parser never needs to know where its value came from.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TypeVar
from urllib.parse import urlsplit

from taskmesh.common.topology.config import Address

T = TypeVar("T")

DATABASE_URL_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg")

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_EXAMPLES = '"250ms", "2s", "5m", "1h"'
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_REGION_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62})")
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_SHOWN_TEXT_MAX = 60


class InvalidValue(ValueError):
    """A raw value does not fit its field; the text is ``expected ..., got ...``."""


def show(value: object) -> str:
    """Render a raw YAML value the way an operator wrote it, for ``got ...`` in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        text = value if len(value) <= _SHOWN_TEXT_MAX else value[:_SHOWN_TEXT_MAX] + "..."
        return json.dumps(text, ensure_ascii=False)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__} ({value})"


def expected(what: str, value: object, *, text: bool = False) -> InvalidValue:
    """The standard ``expected WHAT, got VALUE`` problem; ``text`` if WHAT is a kind of text."""
    hint = ""
    if text and isinstance(value, bool):
        hint = " (YAML reads unquoted yes/no/on/off/true/false as booleans: quote it)"
    return InvalidValue(f"expected {what}, got {show(value)}{hint}")


def _integer(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise expected(what, value)
    return value


def positive_int(value: object) -> int:
    """An integer of at least 1."""
    number = _integer(value, "a positive integer")
    if number < 1:
        raise expected("a positive integer", value)
    return number


def non_negative_int(value: object) -> int:
    """An integer of at least 0."""
    number = _integer(value, "an integer of 0 or more")
    if number < 0:
        raise expected("an integer of 0 or more", value)
    return number


def positive_number(value: object) -> float:
    """A number (integer or not) above 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise expected("a positive number", value)
    if value <= 0:
        raise expected("a positive number", value)
    return float(value)


def string(value: object) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise expected("a non-empty string", value, text=True)
    return value


def optional(parse: Callable[[object], T]) -> Callable[[object], T | None]:
    """``parse``, but ``null`` stands for "not set"."""

    def parse_optional(value: object) -> T | None:
        return None if value is None else parse(value)

    return parse_optional


def positive_duration(value: object) -> timedelta:
    """A duration: ``"250ms"``, ``"2s"``, ``"5m"``, ``"1h"``, ``"1m30s"`` or seconds (number)."""
    seconds = _duration_seconds(value)
    if seconds is None:
        raise expected(f"a duration such as {_DURATION_EXAMPLES} or a number of seconds", value)
    if seconds <= 0:
        raise expected("a positive duration", value)
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise expected("a duration of less than a million days", value) from None


def _duration_seconds(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    text = text.removeprefix("-")
    try:
        return sign * float(text) if math.isfinite(float(text)) else None
    except ValueError:
        pass
    parts = list(_DURATION_PART.finditer(text))
    if not text or "".join(part.group(0) for part in parts) != text:
        return None
    return sign * sum(float(n) * _DURATION_UNITS[unit] for n, unit in (p.groups() for p in parts))


def format_duration(duration: timedelta) -> str | float:
    """The inverse of ``positive_duration``: ``"1m30s"``, ``"250ms"``, or seconds below 1 ms."""
    micros = duration // timedelta(microseconds=1)
    if micros % 1000:
        return duration.total_seconds()
    millis = micros // 1000
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def address(value: object) -> Address:
    """``host:port``: host an IPv4 literal, ``[IPv6]`` literal or hostname; port 0 to 65535."""
    if not isinstance(value, str):
        raise expected("host:port", value)
    if value.startswith("["):
        host, bracket_colon, port_text = value[1:].partition("]:")
        if not bracket_colon or not _is_ipv6(host):
            raise expected("host:port with an IPv6 host such as [::1]:50051", value)
    else:
        host, colon, port_text = value.rpartition(":")
        if not colon:
            raise expected("host:port", value)
        if ":" in host:
            raise expected("host:port with an IPv6 host in brackets, e.g. [::1]:50051", value)
        if not _is_hostname_or_ipv4(host):
            raise expected("host:port with host an IP address or a hostname", value)
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise expected("host:port with a port from 0 to 65535", value)
    return Address(host, int(port_text))


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _is_hostname_or_ipv4(host: str) -> bool:
    labels = host.removesuffix(".").split(".")
    if labels[-1].isdigit():  # looks numeric: only a valid IPv4 literal will do
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def region_name(value: object) -> str:
    """A region name: letters, digits, ``-``, ``_``, ``.``; starts with a letter or digit."""
    if not isinstance(value, str) or not _REGION_NAME.fullmatch(value):
        what = 'a region name (letters, digits, "-", "_" and "."; at most 63 characters)'
        raise expected(what, value, text=True)
    return value


def database_url(value: object) -> str:
    """A PostgreSQL URL; the text of a problem never repeats it, as it may hold a password."""
    if not isinstance(value, str) or not value.strip():
        raise expected("a PostgreSQL URL such as postgresql://user@host:5432/taskmesh", value)
    scheme, has_scheme, _ = value.partition("://")
    if not has_scheme or not _URL_SCHEME.fullmatch(scheme):
        raise InvalidValue(
            "expected a PostgreSQL URL such as postgresql://user@host:5432/taskmesh, "
            "got text without a scheme"
        )
    if scheme.lower() not in DATABASE_URL_SCHEMES:
        raise InvalidValue(
            "expected a postgresql://, postgres:// or postgresql+asyncpg:// URL, "
            f"got a {show(scheme + '://')} URL"
        )
    try:
        urlsplit(value).port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise InvalidValue(
            "expected a PostgreSQL URL with a port from 0 to 65535, got an invalid port"
        ) from None
    return value
