"""The executor policy of a worker pool, enforced before anything is executed.

``regions[].workers.policy`` in the topology says which executors may run, which commands (a
regex must match the whole command line), as which user, with which environment variables. A run
the policy refuses never starts: it ends FAILED with an error naming the rule, so an operator
sees at once which key of the topology to change. The worker still registers every executor it
can run: a refused run then fails clearly instead of waiting forever for a worker that would.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass

from taskmesh.common.errors import ConfigError
from taskmesh.common.model import Executor
from taskmesh.common.topology import ExecutorPolicy
from taskmesh.worker.executor import Execution, RunAs


@dataclass(frozen=True, slots=True)
class CommandPolicy:
    """The checks one worker applies to each assignment."""

    rules: str  # key path of the policy, e.g. ``regions.eu.workers.policy``
    executors: frozenset[Executor]
    commands: tuple[re.Pattern[str], ...]

    @classmethod
    def of(cls, policy: ExecutorPolicy, rules: str) -> CommandPolicy:
        """The checks of ``policy``, whose key path is ``rules``."""
        patterns = tuple(re.compile(pattern) for pattern in policy.commands)
        return cls(rules, frozenset(policy.executors), patterns)

    def refusal(self, execution: Execution) -> str | None:
        """Why ``execution`` may not run here (naming the rule), or None when it may."""
        if execution.executor not in self.executors:
            allowed = ", ".join(sorted(executor.value for executor in self.executors)) or "none"
            return (
                f"refused by {self.rules}.executors: the {execution.executor.value} executor "
                f"is not allowed (allowed: {allowed})"
            )
        if not self.commands or execution.executor is Executor.NOOP:
            return None
        line = command_line(execution)
        if any(pattern.fullmatch(line) for pattern in self.commands):
            return None
        shown = ", ".join(pattern.pattern for pattern in self.commands)
        return f"refused by {self.rules}.commands: {line!r} matches none of: {shown}"


def command_line(execution: Execution) -> str:
    """The text the command patterns are matched against: the shell text, or the quoted argv."""
    if execution.executor is Executor.EXEC:
        return shlex.join((execution.command, *execution.args))
    return execution.command


def command_environment(
    policy: ExecutorPolicy, environ: Mapping[str, str]
) -> tuple[tuple[str, str], ...] | None:
    """The variables commands get: the allow-listed ones that are set; None passes everything."""
    if policy.env is None:
        return None
    return tuple((name, environ[name]) for name in policy.env if name in environ)


def resolve_run_as(policy: ExecutorPolicy, rules: str) -> RunAs | None:
    """The user commands run as; ``ConfigError`` when unknown or not ours to switch to."""
    if policy.run_as is None:
        return None
    try:
        entry = pwd.getpwnam(policy.run_as)
    except KeyError:
        raise ConfigError(
            [f"{rules}.run_as: no user named {policy.run_as!r} on this host"]
        ) from None
    if os.geteuid() != 0 and entry.pw_uid != os.geteuid():
        raise ConfigError(
            [
                f"{rules}.run_as: running commands as {policy.run_as!r} needs a worker started "
                f"as root (this one runs as uid {os.geteuid()}); start it as root or drop run_as"
            ]
        )
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise ConfigError(
            [f"{rules}.run_as: needs util-linux's setpriv on PATH; install util-linux"]
        )
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, setpriv)
