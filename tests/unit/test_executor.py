"""The worker's command executor: exit codes, output tails, timeouts, cancellation."""

from __future__ import annotations

import asyncio
import os
import pwd
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from taskmesh.common.model import Executor, RunState
from taskmesh.worker.executor import Execution, OutputTail, RunAs, execute


def shell(command: str, timeout: float | None = None) -> Execution:
    return Execution(
        Executor.SHELL, command, timeout=timedelta(seconds=timeout) if timeout else None
    )


def pid_alive(pid: int) -> bool:
    """True for a live process; a zombie (dead, not yet reaped by its new parent) is dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_for_file(path: Path) -> str:
    async with asyncio.timeout(10):
        while not path.exists() or not path.read_text().strip():
            await asyncio.sleep(0.01)
    return path.read_text().strip()


async def test_success_captures_stdout_and_stderr() -> None:
    outcome = await execute(shell("echo out; echo err >&2"))
    assert outcome.state is RunState.SUCCEEDED
    assert outcome.exit_code == 0
    assert outcome.output_tail == "out\nerr\n"
    assert outcome.started_at <= outcome.finished_at


async def test_nonzero_exit_is_failed_with_code_and_output() -> None:
    outcome = await execute(shell("echo boom; exit 3"))
    assert outcome.state is RunState.FAILED
    assert outcome.exit_code == 3
    assert outcome.output_tail == "boom\n"
    assert outcome.error == "exited with status 3"


async def test_exec_runs_argv_without_a_shell() -> None:
    outcome = await execute(Execution(Executor.EXEC, "/bin/echo", ("$HOME", "a b")))
    assert outcome.state is RunState.SUCCEEDED
    assert outcome.output_tail == "$HOME a b\n"


async def test_missing_program_fails_with_a_clear_error() -> None:
    outcome = await execute(Execution(Executor.EXEC, "/nonexistent/program"))
    assert outcome.state is RunState.FAILED
    assert "cannot start command" in outcome.error
    assert "/nonexistent/program" in outcome.error


async def test_noop_succeeds_without_a_process() -> None:
    outcome = await execute(Execution(Executor.NOOP, "anything"))
    assert outcome.state is RunState.SUCCEEDED
    assert outcome.exit_code == 0


async def test_output_tail_is_bounded_to_the_last_bytes_and_marked() -> None:
    outcome = await execute(shell("seq 1 100000"), output_limit=20)
    assert outcome.state is RunState.SUCCEEDED
    marker, tail = outcome.output_tail.split("\n", 1)
    total = sum(len(f"{n}\n") for n in range(1, 100001))
    assert marker == (
        f"[taskmesh: output truncated, {total - 20} earlier bytes dropped; "
        "the worker keeps the last 20 bytes]"
    )
    assert len(tail.encode()) == 20
    assert tail.endswith("99999\n100000\n")


async def test_output_under_the_limit_has_no_marker() -> None:
    outcome = await execute(shell("echo short"), output_limit=20)
    assert outcome.output_tail == "short\n"


async def test_an_empty_env_passes_no_variables() -> None:
    execution = Execution(Executor.EXEC, "/usr/bin/env", env=())
    outcome = await execute(execution)
    assert outcome.state is RunState.SUCCEEDED
    assert outcome.output_tail == ""


async def test_env_passes_exactly_the_given_variables() -> None:
    execution = Execution(Executor.EXEC, "/usr/bin/env", env=(("ONLY", "this"),))
    outcome = await execute(execution)
    assert outcome.output_tail == "ONLY=this\n"


async def test_run_as_switches_user_and_groups() -> None:
    if os.geteuid() != 0:
        pytest.fail("this machine runs the suite as root (MACHINE-NOTES); run_as needs it")
    nobody = pwd.getpwnam("nobody")
    run_as = RunAs("nobody", nobody.pw_uid, nobody.pw_gid)
    outcome = await execute(Execution(Executor.SHELL, "id -u; id -g; id -G"), run_as=run_as)
    assert outcome.output_tail.splitlines() == [
        str(nobody.pw_uid),
        str(nobody.pw_gid),
        str(nobody.pw_gid),
    ]


def test_output_tail_keeps_the_newest_bytes() -> None:
    tail = OutputTail(limit=5)
    tail.write(b"abc")
    assert not tail.truncated
    tail.write(b"defg")
    assert tail.text() == "cdefg"
    assert tail.truncated


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    child_pid_file = tmp_path / "child.pid"
    command = f"sleep 60 & echo $! > {child_pid_file}; wait"
    started = time.monotonic()
    outcome = await execute(shell(command, timeout=0.5))
    assert time.monotonic() - started < 10
    assert outcome.state is RunState.TIMED_OUT
    assert "timed out" in outcome.error
    child = int(child_pid_file.read_text())
    await asyncio.sleep(0.1)
    assert not pid_alive(child)


async def test_cancellation_kills_the_process_group_and_reraises(tmp_path: Path) -> None:
    child_pid_file = tmp_path / "child.pid"
    task = asyncio.create_task(execute(shell(f"sleep 60 & echo $! > {child_pid_file}; wait")))
    child = int(await wait_for_file(child_pid_file))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert not pid_alive(child)


async def test_background_children_do_not_outlive_a_finished_run(tmp_path: Path) -> None:
    child_pid_file = tmp_path / "child.pid"
    outcome = await execute(shell(f"sleep 60 & echo $! > {child_pid_file}"), output_limit=100)
    assert outcome.state is RunState.SUCCEEDED
    await asyncio.sleep(0.1)
    assert not pid_alive(int(child_pid_file.read_text()))


async def test_signal_death_is_reported_by_name() -> None:
    outcome = await execute(shell("kill -TERM $$"))
    assert outcome.state is RunState.FAILED
    assert outcome.error == "killed by signal SIGTERM"


async def test_on_start_is_called_once_the_process_exists() -> None:
    starts: list[datetime] = []
    outcome = await execute(shell("echo hi"), on_start=starts.append)
    assert starts == [outcome.started_at]


async def test_on_start_is_not_called_when_the_command_cannot_start() -> None:
    starts: list[datetime] = []
    outcome = await execute(
        Execution(Executor.EXEC, "/nonexistent/program"), on_start=starts.append
    )
    assert outcome.state is RunState.FAILED
    assert starts == []


def processes_running(argument: str) -> list[int]:
    """Live processes with ``argument`` in their command line."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argument.encode() in argv and pid_alive(int(proc.name)):
            found.append(int(proc.name))
    return found


@pytest.mark.parametrize("delay", [0, 0.001, 0.005])
async def test_a_cancel_while_the_process_spawns_leaves_nothing_behind(delay: float) -> None:
    marker = f"61.{time.monotonic_ns() % 10**9}"  # a unique sleep length to find its process
    task = asyncio.create_task(execute(shell(f"sleep {marker}; true")))
    await asyncio.sleep(delay)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    await asyncio.sleep(0.1)
    assert processes_running(marker) == []
