"""The worker pool's executor policy: what is refused, and the rule each refusal names."""

from __future__ import annotations

import os
import pwd
from typing import Any

import pytest

from taskmesh.common.errors import ConfigError
from taskmesh.common.model import Executor
from taskmesh.common.topology import ExecutorPolicy
from taskmesh.worker.executor import Execution
from taskmesh.worker.policy import (
    CommandPolicy,
    command_environment,
    command_line,
    resolve_run_as,
)

RULES = "regions.eu.workers.policy"


def policy(**fields: Any) -> CommandPolicy:
    return CommandPolicy.of(ExecutorPolicy(**fields), RULES)


def test_the_default_policy_allows_everything() -> None:
    assert policy().refusal(Execution(Executor.SHELL, "rm -rf /tmp/x")) is None


def test_an_executor_not_listed_is_refused_naming_the_rule() -> None:
    refusal = policy(executors=(Executor.EXEC,)).refusal(Execution(Executor.SHELL, "echo hi"))
    assert refusal == (
        f"refused by {RULES}.executors: the shell executor is not allowed (allowed: exec)"
    )


def test_a_command_must_match_one_pattern_entirely() -> None:
    allowed = policy(commands=(r"echo [a-z ]*", r"/usr/bin/env"))
    assert allowed.refusal(Execution(Executor.SHELL, "echo hello world")) is None
    refusal = allowed.refusal(Execution(Executor.SHELL, "echo hi; rm -rf /"))
    assert refusal is not None
    assert refusal.startswith(f"refused by {RULES}.commands: 'echo hi; rm -rf /' matches none of")


def test_exec_commands_are_matched_as_their_quoted_argv() -> None:
    execution = Execution(Executor.EXEC, "/bin/echo", ("a b", "c"))
    assert command_line(execution) == "/bin/echo 'a b' c"
    assert policy(commands=(r"/bin/echo .*",)).refusal(execution) is None
    assert policy(commands=(r"/bin/echo",)).refusal(execution) is not None


def test_the_env_allow_list_passes_only_listed_variables_that_are_set() -> None:
    environ = {"PATH": "/bin", "HOME": "/root", "SECRET": "x"}
    assert command_environment(ExecutorPolicy(env=("PATH", "LANG")), environ) == (("PATH", "/bin"),)
    assert command_environment(ExecutorPolicy(env=()), environ) == ()
    assert command_environment(ExecutorPolicy(), environ) is None  # today's behaviour: all


def test_run_as_an_unknown_user_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"policy\.run_as: no user named 'no-such-user-x'"):
        resolve_run_as(ExecutorPolicy(run_as="no-such-user-x"), RULES)


def test_run_as_resolves_uid_and_gid() -> None:
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() != 0:
        pytest.fail("this machine runs the suite as root (MACHINE-NOTES); run_as needs it")
    run_as = resolve_run_as(ExecutorPolicy(run_as="nobody"), RULES)
    assert run_as is not None
    assert (run_as.uid, run_as.gid) == (nobody.pw_uid, nobody.pw_gid)
