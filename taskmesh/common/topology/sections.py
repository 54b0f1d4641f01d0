"""Reading one mapping of the file at a time, collecting every problem instead of stopping.

A ``Section`` knows its key path (``regions[0].workers``), keeps the known keys of its mapping
and appends one message per problem to a shared list. A value that does not parse is reported
and replaced by the field's default, so reading carries on and every problem is found in one go.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from taskmesh.common.topology.schema import known_keys
from taskmesh.common.topology.values import InvalidValue, expected

T = TypeVar("T")

TOP_LEVEL = "top level"


def join(path: str, key: str | int) -> str:
    """The key path of ``key`` under ``path``: ``master.breaker``, ``regions[0]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def unknown_key(key: str, known: tuple[str, ...]) -> str:
    """The problem text for a key the section does not have, with a guess if one is close."""
    guesses = difflib.get_close_matches(key, known, n=1)
    guess = f', did you mean "{guesses[0]}"?' if guesses else ""
    return f"unknown key{guess} (known keys: {', '.join(known)})"


@dataclass(slots=True)
class Section:
    """One mapping of the topology file, read key by key."""

    path: str
    values: Mapping[str, object]
    problems: list[str]
    failed: set[str] = field(default_factory=set)  # keys whose value was reported
    is_mapping: bool = True  # False when the raw value was reported as not a mapping

    @classmethod
    def open(
        cls, raw: object, path: str, shape: type, problems: list[str], what: str = "a mapping"
    ) -> Section:
        """Check ``raw`` is a mapping with only ``shape``'s keys; ``null`` reads as empty."""
        if raw is None:
            return cls(path, {}, problems)
        if not isinstance(raw, Mapping):
            problems.append(f"{path or TOP_LEVEL}: {expected(what, raw)}")
            return cls(path, {}, problems, is_mapping=False)
        known = known_keys(shape)
        values: dict[str, object] = {}
        for key, value in raw.items():
            if not isinstance(key, str):
                problems.append(f"{path or TOP_LEVEL}: {expected('string keys', key)}")
            elif key not in known:
                problems.append(f"{join(path, key)}: {unknown_key(key, known)}")
            else:
                values[key] = value
        return cls(path, values, problems)

    def key_path(self, key: str | int) -> str:
        """The full key path of ``key`` in this section."""
        return join(self.path, key)

    def complain(self, key: str, message: str) -> None:
        """Record a problem with ``key``."""
        self.failed.add(key)
        self.problems.append(f"{self.key_path(key)}: {message}")

    def ok(self, *keys: str) -> bool:
        """True when none of ``keys`` had a problem (so checks across them make sense)."""
        return self.failed.isdisjoint(keys)

    def value(self, key: str, parse: Callable[[object], T], default: T) -> T:
        """The parsed value of ``key``, or ``default`` if absent or (reported as) invalid."""
        if key not in self.values:
            return default
        try:
            return parse(self.values[key])
        except InvalidValue as problem:
            self.complain(key, str(problem))
            return default

    def section(self, key: str, shape: type) -> Section:
        """The sub-mapping at ``key`` (empty if absent)."""
        return Section.open(self.values.get(key), self.key_path(key), shape, self.problems)

    def items(self, key: str) -> list[tuple[str, object]]:
        """The entries of the list at ``key`` with their key paths (none if absent or null)."""
        raw = self.values.get(key)
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.complain(key, str(expected("a list", raw)))
            return []
        return [(self.key_path(key) + f"[{index}]", item) for index, item in enumerate(raw)]

    def string_map(self, key: str) -> Mapping[str, str]:
        """The mapping of strings to strings at ``key``, e.g. ``labels: {pool: general}``."""
        raw = self.values.get(key)
        if raw is None:
            return MappingProxyType({})
        if not isinstance(raw, Mapping):
            self.complain(key, str(expected("a mapping of strings to strings", raw)))
            return MappingProxyType({})
        result: dict[str, str] = {}
        for name, label in raw.items():
            if not isinstance(name, str):
                self.complain(key, str(expected("string keys", name)))
            elif not isinstance(label, str):
                problem = expected("a string", label, text=True)
                self.problems.append(f"{self.key_path(key)}.{name}: {problem}")
                self.failed.add(key)
            else:
                result[name] = label
        return MappingProxyType(result)
