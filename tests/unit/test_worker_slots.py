"""The slot pool: bounded concurrency, stop kinds and their results, no process left behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from taskmesh.common.model import Executor, RunState
from taskmesh.worker.executor import Execution
from taskmesh.worker.messages import Assignment, Result, RunKey
from taskmesh.worker.slots import SlotPool, Stop, StopKind

WAIT = 10.0


class Recorder:
    """What the pool reported: starts and results, with an event per finished run."""

    def __init__(self) -> None:
        self.starts: list[tuple[RunKey, datetime]] = []
        self.results: dict[RunKey, Result | None] = {}
        self.finished = asyncio.Condition()

    def on_start(self, assignment: Assignment, at: datetime) -> None:
        self.starts.append((assignment.key, at))

    def on_finish(self, assignment: Assignment, result: Result | None) -> None:
        self.results[assignment.key] = result
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self.finished:
            self.finished.notify_all()

    async def result(self, key: RunKey) -> Result | None:
        async with asyncio.timeout(WAIT), self.finished:
            await self.finished.wait_for(lambda: key in self.results)
        return self.results[key]


def shell(run_id: str, command: str, epoch: int = 1) -> Assignment:
    return Assignment(RunKey(run_id, epoch), "task", "name", 1, Execution(Executor.SHELL, command))


@pytest.fixture
async def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def pool(recorder: Recorder) -> AsyncIterator[SlotPool]:
    slots = SlotPool(2, on_start=recorder.on_start, on_finish=recorder.on_finish)
    async with slots:
        yield slots
        slots.stop_all(Stop(StopKind.ABANDON, "test over"))


async def wait_for_pid(path: Path) -> int:
    async with asyncio.timeout(WAIT):
        while not path.exists() or not path.read_text().strip():
            await asyncio.sleep(0.01)
    return int(path.read_text())


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_a_run_reports_its_start_and_its_result(pool: SlotPool, recorder: Recorder) -> None:
    pool.start(shell("a", "echo hi"))
    assert (pool.in_use, pool.free, pool.running) == (1, 1, (RunKey("a", 1),))
    result = await recorder.result(RunKey("a", 1))
    assert result is not None
    assert (result.state, result.exit_code, result.output_tail) == (RunState.SUCCEEDED, 0, "hi\n")
    assert recorder.starts == [(RunKey("a", 1), result.started_at)]
    assert pool.free == 2
    await asyncio.wait_for(pool.wait_idle(), WAIT)


async def test_never_more_runs_than_slots(pool: SlotPool) -> None:
    pool.start(shell("a", "sleep 60"))
    pool.start(shell("b", "sleep 60"))
    with pytest.raises(RuntimeError, match="no slot"):
        pool.start(shell("c", "echo"))
    assert pool.free == 0


@pytest.mark.parametrize(
    ("kind", "state"),
    [(StopKind.CANCEL, RunState.CANCELLED), (StopKind.SHUTDOWN, RunState.FAILED)],
)
async def test_a_stopped_run_is_killed_and_reports_its_stop(
    pool: SlotPool, recorder: Recorder, tmp_path: Path, kind: StopKind, state: RunState
) -> None:
    pid_file = tmp_path / "pid"
    pool.start(shell("a", f"echo $$ > {pid_file}; exec sleep 60"))
    pid = await wait_for_pid(pid_file)
    assert pool.stop(RunKey("a", 1), Stop(kind, "because")) == 1
    result = await recorder.result(RunKey("a", 1))
    assert result is not None
    assert (result.state, result.error, result.exit_code) == (state, "because", None)
    assert result.started_at is not None
    assert not pid_alive(pid)


async def test_an_abandoned_run_is_killed_without_a_result(
    pool: SlotPool, recorder: Recorder, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    pool.start(shell("a", f"echo $$ > {pid_file}; exec sleep 60"))
    pid = await wait_for_pid(pid_file)
    pool.stop(RunKey("a", 1), Stop(StopKind.ABANDON, "gone"))
    assert await recorder.result(RunKey("a", 1)) is None
    assert not pid_alive(pid)


async def test_a_run_stopped_before_it_began_never_starts_a_process(
    pool: SlotPool, recorder: Recorder, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    pool.start(shell("a", f"touch {marker}"))
    pool.stop(RunKey("a", 1), Stop(StopKind.CANCEL, "at once"))
    result = await recorder.result(RunKey("a", 1))
    assert result is not None
    assert (result.state, result.started_at) == (RunState.CANCELLED, None)
    assert recorder.starts == []
    assert not marker.exists()


async def test_a_stop_under_an_older_epoch_leaves_a_newer_attempt_alone(
    pool: SlotPool, recorder: Recorder
) -> None:
    pool.start(shell("a", "sleep 0.2", epoch=5))
    assert pool.stop(RunKey("a", 4), Stop(StopKind.CANCEL, "stale")) == 0
    assert pool.held("a") == (RunKey("a", 5),)
    result = await recorder.result(RunKey("a", 5))
    assert result is not None
    assert result.state is RunState.SUCCEEDED


async def test_an_executor_error_fails_the_run_and_spares_the_others(
    pool: SlotPool, recorder: Recorder
) -> None:
    pool.start(shell("ok", "sleep 0.2; echo fine"))
    pool.start(shell("bad", "echo \0"))  # a NUL byte: the OS cannot take it as an argument
    bad = await recorder.result(RunKey("bad", 1))
    assert bad is not None
    assert bad.state is RunState.FAILED
    assert bad.error.startswith("worker error while executing")
    good = await recorder.result(RunKey("ok", 1))
    assert good is not None
    assert good.output_tail == "fine\n"


async def test_tearing_the_pool_down_kills_every_process(
    recorder: Recorder, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    pool = SlotPool(1, on_start=recorder.on_start, on_finish=recorder.on_finish)

    async def serve() -> None:
        async with pool:
            pool.start(shell("a", f"echo $$ > {pid_file}; exec sleep 60"))
            await asyncio.Event().wait()

    server = asyncio.create_task(serve())
    pid = await wait_for_pid(pid_file)
    server.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(server, WAIT)
    assert not pid_alive(pid)
    assert recorder.results == {}


def test_a_pool_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        SlotPool(0, on_start=lambda a, t: None, on_finish=lambda a, r: None)
