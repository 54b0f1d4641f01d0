"""The two-stage stop, with real signals sent to this process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
from collections.abc import Iterator

import pytest

from taskmesh.common.signals import STOP_SIGNALS, two_stage_stop

WAIT = 5.0  # seconds: a bound only a lost signal reaches


class Recorder:
    """Drain and force callbacks that note the signal they got and wake the test."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, signal.Signals]] = []
        self.called = asyncio.Event()

    def drain(self, number: signal.Signals) -> None:
        """The first signal."""
        self._record("drain", number)

    def force(self, number: signal.Signals) -> None:
        """Every later signal."""
        self._record("force", number)

    async def send(self, number: signal.Signals) -> None:
        """Signal this process and wait until a callback ran."""
        self.called.clear()
        os.kill(os.getpid(), number)
        await asyncio.wait_for(self.called.wait(), WAIT)

    def _record(self, stage: str, number: signal.Signals) -> None:
        self.calls.append((stage, number))
        self.called.set()


@pytest.fixture(autouse=True)
def restored_handlers() -> Iterator[None]:
    """Put back the process's own handlers, whatever a test left behind."""
    saved = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


def assert_unhandled() -> None:
    """The running loop handles none of the stop signals (any handler found is removed)."""
    loop = asyncio.get_running_loop()
    assert [number for number in STOP_SIGNALS if loop.remove_signal_handler(number)] == []


async def test_the_first_signal_drains_and_every_later_one_forces() -> None:
    """SIGTERM drains; SIGINT and SIGTERM after it force; the handlers go on the way out."""
    recorder = Recorder()
    async with two_stage_stop(recorder.drain, recorder.force):
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
            await recorder.send(number)
    assert recorder.calls == [
        ("drain", signal.SIGTERM),
        ("force", signal.SIGINT),
        ("force", signal.SIGTERM),
    ]
    assert_unhandled()


async def test_a_second_signal_can_cancel_the_block() -> None:
    """The master's shape: drain sets an event, force cancels the task inside the block."""
    stopping = asyncio.Event()
    entered = asyncio.Event()

    async def serve() -> None:
        task = asyncio.current_task()
        assert task is not None
        async with two_stage_stop(lambda _: stopping.set(), lambda _: task.cancel()):
            entered.set()
            await asyncio.sleep(WAIT * 10)

    serving = asyncio.create_task(serve())
    await asyncio.wait_for(entered.wait(), WAIT)
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.wait_for(stopping.wait(), WAIT)
    assert not serving.done()
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(serving, WAIT)
    assert_unhandled()


async def test_leaving_by_an_error_removes_the_handlers() -> None:
    """A daemon that fails does not leave its handlers behind."""
    recorder = Recorder()
    with pytest.raises(RuntimeError, match="boom"):
        async with two_stage_stop(recorder.drain, recorder.force):
            raise RuntimeError("boom")
    assert_unhandled()


def test_outside_the_main_thread_the_block_runs_without_handlers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only the main thread may handle signals: say so, and run the block regardless."""
    recorder = Recorder()

    async def body() -> str:
        async with two_stage_stop(recorder.drain, recorder.force):
            return "ran"

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as thread:
        assert thread.submit(asyncio.run, body()).result(timeout=WAIT) == "ran"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [message.split(" (")[0] for message in warnings] == [
        "cannot handle SIGTERM here",
        "cannot handle SIGINT here",
    ]
