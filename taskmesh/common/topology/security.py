"""Reading the security keys of the topology: TLS files, the master's auth, worker policies.

Paths are taken relative to the topology file's directory (``base_dir``) and must name existing
files, so a typo is reported with its key path when the file is loaded, not at the first call.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from taskmesh.common.model import Executor
from taskmesh.common.topology import values
from taskmesh.common.topology.config import (
    MAX_OUTPUT_LIMIT,
    AuthConfig,
    ExecutorPolicy,
    TlsConfig,
)
from taskmesh.common.topology.schema import PolicyFile, TlsFile
from taskmesh.common.topology.sections import Section

TLS_KEYS = ("ca", "cert", "key")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def read_tls(parent: Section, base_dir: Path | None) -> TlsConfig | None:
    """The ``tls`` section of ``parent``: None when absent, else all of ca, cert and key."""
    if parent.values.get("tls") is None:
        return None
    section = parent.section("tls", TlsFile)
    paths: dict[str, Path] = {}
    for key in TLS_KEYS:
        if key not in section.values:
            section.complain(key, "missing; tls needs ca, cert and key (PEM files)")
            continue
        path = section.value(key, values.optional(_existing_file(base_dir)), None)
        if path is not None:
            paths[key] = path
    if len(paths) < len(TLS_KEYS):
        return None
    return TlsConfig(ca=paths["ca"], cert=paths["cert"], key=paths["key"])


def read_auth(section: Section, base_dir: Path | None) -> AuthConfig:
    """The master's ``auth`` section: where the bearer tokens are (none: auth off)."""
    tokens = section.value("tokens_file", values.optional(_existing_file(base_dir)), None)
    return AuthConfig(tokens_file=tokens)


def read_policy(parent: Section) -> ExecutorPolicy:
    """A worker pool's ``policy`` section (absent: anything runs, as today)."""
    section = parent.section("policy", PolicyFile)
    default = ExecutorPolicy()
    return ExecutorPolicy(
        executors=_executors(section, default.executors),
        commands=_patterns(section),
        run_as=section.value("run_as", values.optional(values.string), None),
        env=_env_names(section),
        output_limit=section.value("output_limit", _output_limit, default.output_limit),
    )


def _existing_file(base_dir: Path | None) -> Callable[[object], Path]:
    """A parser of a path (relative to ``base_dir``) that must name an existing file."""

    def parse(value: object) -> Path:
        path = Path(values.string(value))
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        if not path.is_file():
            raise values.expected("the path of an existing file", value, text=True)
        return path

    return parse


def _executors(section: Section, default: tuple[Executor, ...]) -> tuple[Executor, ...]:
    known = ", ".join(executor.value for executor in Executor)
    chosen: list[Executor] = []
    for path, raw in section.items("executors"):
        try:
            chosen.append(Executor(raw) if isinstance(raw, str) else Executor(""))
        except ValueError:
            problem = values.expected(f"an executor ({known})", raw, text=True)
            section.problems.append(f"{path}: {problem}")
    return tuple(chosen) if "executors" in section.values else default


def _patterns(section: Section) -> tuple[str, ...]:
    patterns: list[str] = []
    for path, raw in section.items("commands"):
        if not isinstance(raw, str):
            section.problems.append(f"{path}: {values.expected('a regular expression', raw)}")
            continue
        try:
            re.compile(raw)
        except re.error as error:
            section.problems.append(f"{path}: expected a regular expression, got {raw!r} ({error})")
            continue
        patterns.append(raw)
    return tuple(patterns)


def _env_names(section: Section) -> tuple[str, ...] | None:
    if section.values.get("env") is None:
        return None
    names: list[str] = []
    for path, raw in section.items("env"):
        if isinstance(raw, str) and _ENV_NAME.fullmatch(raw):
            names.append(raw)
        else:
            problem = values.expected("an environment variable name", raw, text=True)
            section.problems.append(f"{path}: {problem}")
    return tuple(names)


def _output_limit(value: object) -> int:
    limit = values.positive_int(value)
    if limit > MAX_OUTPUT_LIMIT:
        raise values.expected(f"at most {MAX_OUTPUT_LIMIT} bytes", value)
    return limit
