"""The worker daemon against a scripted region: a real grpc.aio server on 127.0.0.1:0.

``FakeRegion`` implements ``WorkerLink.Connect``: it records every message a worker sends on
each stream, welcomes it (with the abandon list the test set), and sends whatever the test
queues; the test can end or abort a stream to simulate a region going away. Every wait is
bounded generously to catch hangs; nothing asserts on speed except a cancel's 2 s bound.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from taskmesh.cli.health import Target, format_table, probe
from taskmesh.common.readiness import parse_ready_line
from taskmesh.common.retry_policies import Backoff
from taskmesh.common.rpc import region_pb2, region_pb2_grpc, run_pb2, task_pb2
from taskmesh.common.topology import Address
from taskmesh.worker.daemon import Worker
from taskmesh.worker.region_link import LinkState
from taskmesh.worker.settings import WorkerSettings

WAIT = 60.0  # seconds: a bound that only a hang reaches (the machine is shared and noisy)
Message = region_pb2.WorkerMessage
Predicate = Callable[[Message], bool]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
Context = grpc.aio.ServicerContext[Message, region_pb2.RegionMessage]


class RegionStream:
    """One ``Connect`` call as the fake region sees it."""

    def __init__(self) -> None:
        self.received: list[Message] = []
        self.outgoing: asyncio.Queue[region_pb2.RegionMessage | grpc.StatusCode | None] = (
            asyncio.Queue()
        )
        self.changed = asyncio.Condition()
        self.finished = asyncio.Event()

    @property
    def registration(self) -> region_pb2.RegisterWorker:
        return self.received[0].register

    def kinds(self) -> list[str]:
        return [str(message.WhichOneof("body")) for message in self.received]

    def of_kind(self, kind: str) -> list[Message]:
        return [m for m in self.received if m.WhichOneof("body") == kind]

    def results(self) -> list[region_pb2.RunResult]:
        return [r for m in self.of_kind("results") for r in m.results.results]

    def started(self) -> list[region_pb2.RunStarted]:
        return [s for m in self.of_kind("started") for s in m.started.runs]

    async def record(self, message: Message) -> None:
        async with self.changed:
            self.received.append(message)
            self.changed.notify_all()

    async def wait_for(self, predicate: Predicate, after: int = 0) -> Message:
        """The first message at index ``after`` or later that satisfies ``predicate``."""
        async with asyncio.timeout(WAIT), self.changed:
            while True:
                for message in self.received[after:]:
                    if predicate(message):
                        return message
                await self.changed.wait()

    async def result_of(self, run_id: str) -> region_pb2.RunResult:
        message = await self.wait_for(lambda m: any(r.run.run_id == run_id for r in _results(m)))
        return next(r for r in _results(message) if r.run.run_id == run_id)

    async def heartbeat(self, predicate: Callable[[region_pb2.WorkerHeartbeat], bool]) -> None:
        await self.wait_for(
            lambda m: m.WhichOneof("body") == "heartbeat" and predicate(m.heartbeat)
        )

    def send(self, message: region_pb2.RegionMessage) -> None:
        self.outgoing.put_nowait(message)

    def assign(self, *assignments: region_pb2.Assignment) -> None:
        self.send(region_pb2.RegionMessage(assign=region_pb2.AssignRuns(assignments=assignments)))

    def cancel(self, *refs: region_pb2.RunRef, reason: str = "") -> None:
        cancel = region_pb2.CancelAssignments(runs=refs, reason=reason)
        self.send(region_pb2.RegionMessage(cancel=cancel))

    def ack(self, *refs: region_pb2.RunRef) -> None:
        self.send(region_pb2.RegionMessage(ack=region_pb2.AckResults(runs=refs)))

    def end(self) -> None:
        """End the stream with status OK, as a region shutting it down would."""
        self.outgoing.put_nowait(None)

    def abort(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        """Fail the stream with ``code``."""
        self.outgoing.put_nowait(code)


def _results(message: Message) -> Sequence[region_pb2.RunResult]:
    return message.results.results if message.WhichOneof("body") == "results" else ()


class FakeRegion(region_pb2_grpc.WorkerLinkServicer):
    """A region that records, welcomes, acks (if ``auto_ack``) and sends what it is told."""

    def __init__(self, *, auto_ack: bool = True) -> None:
        self.auto_ack = auto_ack
        self.streams: list[RegionStream] = []
        self.abandon: list[region_pb2.RunRef] = []  # for the next welcome
        self.heartbeat_interval = timedelta(milliseconds=100)
        self.port = 0
        self._opened = asyncio.Condition()

    async def Connect(
        self, request_iterator: AsyncIterator[Message], context: Context
    ) -> AsyncIterator[region_pb2.RegionMessage]:
        stream = RegionStream()
        first = await anext(request_iterator)
        assert first.WhichOneof("body") == "register"
        await stream.record(first)
        async with self._opened:
            self.streams.append(stream)
            self._opened.notify_all()
        yield region_pb2.RegionMessage(welcome=self._welcome())
        reader = asyncio.create_task(self._read(request_iterator, stream))
        try:
            while (item := await stream.outgoing.get()) is not None:
                if isinstance(item, grpc.StatusCode):
                    await context.abort(item, "the fake region aborts the stream")
                yield item
        finally:
            reader.cancel()
            stream.finished.set()

    def _welcome(self) -> region_pb2.WorkerWelcome:
        interval = Duration()
        interval.FromTimedelta(self.heartbeat_interval)
        abandon, self.abandon = self.abandon, []
        return region_pb2.WorkerWelcome(region="test", heartbeat_interval=interval, abandon=abandon)

    async def _read(self, requests: AsyncIterator[Message], stream: RegionStream) -> None:
        async for message in requests:
            await stream.record(message)
            if self.auto_ack and message.WhichOneof("body") == "results":
                stream.ack(*(result.run for result in message.results.results))
        stream.end()  # the worker half-closed: end our side too

    async def stream(self, index: int) -> RegionStream:
        """Stream number ``index`` (0-based), once the worker has opened it."""
        async with asyncio.timeout(WAIT), self._opened:
            await self._opened.wait_for(lambda: len(self.streams) > index)
        return self.streams[index]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start_server(region: FakeRegion, port: int = 0) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    region_pb2_grpc.add_WorkerLinkServicer_to_server(region, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


@pytest.fixture
async def region() -> AsyncIterator[FakeRegion]:
    fake = FakeRegion()
    server, port = await start_server(fake)
    fake.port = port
    yield fake
    await server.stop(grace=None)


def settings(port: int, **overrides: Any) -> WorkerSettings:
    base = WorkerSettings(
        region="test",
        region_address=f"127.0.0.1:{port}",
        worker_id="worker-1",
        slots=2,
        labels={"zone": "a"},
        heartbeat_interval=timedelta(milliseconds=100),
        shutdown_timeout=timedelta(seconds=5),
        flush_timeout=timedelta(seconds=2),
    )
    return replace(base, **overrides)


class RunningWorker:
    """A worker running as a task, stopped (forcefully if need be) when the test ends."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.task = asyncio.create_task(worker.run(), name="worker")

    async def stopped(self) -> None:
        """Wait for ``run`` to return (after ``stop``)."""
        async with asyncio.timeout(WAIT):
            await self.task

    async def close(self) -> None:
        self.worker.stop("test ended", force=True)
        async with asyncio.timeout(WAIT):
            await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def start_worker() -> AsyncIterator[Callable[..., RunningWorker]]:
    running: list[RunningWorker] = []

    def start(port: int, **overrides: Any) -> RunningWorker:
        backoff = Backoff(timedelta(milliseconds=20), timedelta(milliseconds=200))
        handle = RunningWorker(Worker(settings(port, **overrides), backoff=backoff))
        running.append(handle)
        return handle

    yield start
    for handle in running:
        await handle.close()


def ref(run_id: str, epoch: int = 1) -> region_pb2.RunRef:
    return region_pb2.RunRef(run_id=run_id, epoch=epoch)


def shell(
    run_id: str, command: str, *, epoch: int = 1, timeout: float | None = None
) -> region_pb2.Assignment:
    assignment = region_pb2.Assignment(
        run=ref(run_id, epoch),
        task_id=f"task-of-{run_id}",
        task_name="test",
        attempt=1,
        executor=task_pb2.EXECUTOR_SHELL,
        command=command,
    )
    if timeout is not None:
        assignment.timeout.FromTimedelta(timedelta(seconds=timeout))
    return assignment


def is_kind(kind: str) -> Predicate:
    return lambda message: message.WhichOneof("body") == kind


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.02)


def running_ids(refs: Iterable[region_pb2.RunRef]) -> list[str]:
    return [r.run_id for r in refs]


# ---- registration and execution -------------------------------------------------------------


async def test_registration_names_the_worker_its_slots_labels_and_executors(
    region: FakeRegion, start_worker: Callable[..., RunningWorker]
) -> None:
    start_worker(region.port, slots=3)
    stream = await region.stream(0)
    registration = stream.registration
    assert registration.worker_id == "worker-1"
    assert registration.slots == 3
    assert dict(registration.labels) == {"zone": "a"}
    assert set(registration.executors) == {
        task_pb2.EXECUTOR_SHELL,
        task_pb2.EXECUTOR_EXEC,
        task_pb2.EXECUTOR_NOOP,
    }
    assert list(registration.running) == []
    assert registration.version
    await stream.heartbeat(lambda h: h.free_slots == 3 and h.outbox_size == 0)


async def test_an_assignment_runs_and_its_result_arrives_after_its_start(
    region: FakeRegion, start_worker: Callable[..., RunningWorker]
) -> None:
    start_worker(region.port)
    stream = await region.stream(0)
    stream.assign(shell("r1", "echo hello; echo oops >&2; exit 3"))
    result = await stream.result_of("r1")
    assert result.run == ref("r1")
    assert result.state == run_pb2.RUN_STATE_FAILED
    assert result.exit_code == 3
    assert result.output_tail == "hello\noops\n"
    assert result.error == "exited with status 3"
    assert result.HasField("started_at")
    assert result.HasField("finished_at")
    kinds = stream.kinds()
    assert kinds.index("started") < kinds.index("results")
    assert stream.started()[0].run == ref("r1")
    assert stream.started()[0].started_at == result.started_at
    await stream.heartbeat(lambda h: h.outbox_size == 0)  # auto-acked


async def test_noop_and_exec_assignments_run_without_a_shell(
    region: FakeRegion, start_worker: Callable[..., RunningWorker]
) -> None:
    start_worker(region.port)
    stream = await region.stream(0)
    noop = region_pb2.Assignment(run=ref("n1"), executor=task_pb2.EXECUTOR_NOOP, command="x")
    exec_ = region_pb2.Assignment(
        run=ref("e1"), executor=task_pb2.EXECUTOR_EXEC, command="/bin/echo", args=["$HOME", "a b"]
    )
    stream.assign(noop, exec_)
    assert (await stream.result_of("n1")).state == run_pb2.RUN_STATE_SUCCEEDED
    echoed = await stream.result_of("e1")
    assert echoed.output_tail == "$HOME a b\n"
    assert {s.run.run_id for s in stream.started()} == {"n1", "e1"}


async def test_a_timeout_is_reported_timed_out(
    region: FakeRegion, start_worker: Callable[..., RunningWorker]
) -> None:
    start_worker(region.port)
    stream = await region.stream(0)
    stream.assign(shell("t1", "echo begun; sleep 60", timeout=0.3))
    result = await stream.result_of("t1")
    assert result.state == run_pb2.RUN_STATE_TIMED_OUT
    assert result.output_tail == "begun\n"
    assert not result.HasField("exit_code")


async def test_a_command_that_cannot_start_fails_without_started_at(
    region: FakeRegion, start_worker: Callable[..., RunningWorker]
) -> None:
    start_worker(region.port)
    stream = await region.stream(0)
    missing = region_pb2.Assignment(
        run=ref("m1"), executor=task_pb2.EXECUTOR_EXEC, command="/nonexistent/program"
    )
    stream.assign(missing)
    result = await stream.result_of("m1")
    assert result.state == run_pb2.RUN_STATE_FAILED
    assert "cannot start command" in result.error
    assert not result.HasField("started_at")
    assert stream.started() == []


# ---- slots and credit -------------------------------------------------------------------------


async def test_slots_bound_concurrency_and_heartbeats_carry_the_credit(
    region: FakeRegion, start_worker: Callable[..., RunningWorker], tmp_path: Path
) -> None:
    start_worker(region.port, slots=2)
    stream = await region.stream(0)
    gate = tmp_path / "gate"
    wait_for_gate = f"while [ ! -e {gate} ]; do sleep 0.02; done"
    stream.assign(shell("s1", wait_for_gate), shell("s2", wait_for_gate))
    await stream.heartbeat(lambda h: h.free_slots == 0 and set(h.running_run_ids) == {"s1", "s2"})
    # Over-assignment: nothing fits, so the run fails at once instead of waiting or vanishing.
    stream.assign(shell("s3", "echo never"))
    extra = await stream.result_of("s3")
    assert extra.state == run_pb2.RUN_STATE_FAILED
    assert "worker worker-1 has no free slot" in extra.error
    assert not extra.HasField("started_at")
    assert "s3" not in {s.run.run_id for s in stream.started()}
    gate.touch()
    assert (await stream.result_of("s1")).state == run_pb2.RUN_STATE_SUCCEEDED
    assert (await stream.result_of("s2")).state == run_pb2.RUN_STATE_SUCCEEDED
    await stream.heartbeat(lambda h: h.free_slots == 2 and not h.running_run_ids)


async def test_a_batch_larger_than_the_credit_starts_what_fits_and_fails_the_rest(
    region: FakeRegion, start_worker: Callable[..., RunningWorker]
) -> None:
    start_worker(region.port, slots=2)
    stream = await region.stream(0)
    stream.assign(*(shell(f"b{i}", "sleep 0.3") for i in range(3)))
    states = {i: (await stream.result_of(f"b{i}")).state for i in range(3)}
    assert states == {
        0: run_pb2.RUN_STATE_SUCCEEDED,
        1: run_pb2.RUN_STATE_SUCCEEDED,
        2: run_pb2.RUN_STATE_FAILED,
    }
    assert "a batch of 3 runs with 2 of 2 slots free" in (await stream.result_of("b2")).error


async def test_a_duplicate_assignment_is_ignored(
    region: FakeRegion, start_worker: Callable[..., RunningWorker], tmp_path: Path
) -> None:
    start_worker(region.port, slots=2)
    stream = await region.stream(0)
    gate = tmp_path / "gate"
    stream.assign(shell("d1", f"while [ ! -e {gate} ]; do sleep 0.02; done"))
    await stream.wait_for(is_kind("started"))
    stream.assign(shell("d1", "echo again"))
    await stream.heartbeat(lambda h: h.free_slots == 1)
    gate.touch()
    await stream.result_of("d1")
    await stream.heartbeat(lambda h: h.free_slots == 2)
    assert [r.run.run_id for r in stream.results()] == ["d1"]
    assert [s.run.run_id for s in stream.started()] == ["d1"]


async def test_a_newer_epoch_supersedes_the_running_attempt_and_an_older_one_is_ignored(
    region: FakeRegion, start_worker: Callable[..., RunningWorker], tmp_path: Path
) -> None:
    start_worker(region.port, slots=2)
    stream = await region.stream(0)
    pid_file = tmp_path / "pid"
    stream.assign(shell("x", f"echo $$ > {pid_file}; exec sleep 60", epoch=1))
    await wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    pid = int(pid_file.read_text())
    stream.assign(shell("x", "sleep 0.3; echo second", epoch=2))
    await wait_until(lambda: not pid_alive(pid))
    stream.assign(shell("x", "echo stale", epoch=1))
    result = await stream.result_of("x")
    assert (result.run.epoch, result.output_tail) == (2, "second\n")
    await stream.heartbeat(lambda h: h.free_slots == 2 and h.outbox_size == 0)
    assert [(r.run.epoch, r.state) for r in stream.results()] == [(2, run_pb2.RUN_STATE_SUCCEEDED)]


async def test_an_undecodable_assignment_fails_without_starting(
    region: FakeRegion, start_worker: Callable[..., RunningWorker]
) -> None:
    start_worker(region.port)
    stream = await region.stream(0)
    stream.assign(
        region_pb2.Assignment(
            run=ref("bad"), executor=task_pb2.Executor.ValueType(42), command="echo"
        )
    )
    result = await stream.result_of("bad")
    assert result.state == run_pb2.RUN_STATE_FAILED
    assert result.error.startswith("not started: invalid assignment: executor")
    assert not result.HasField("started_at")


# ---- cancel and abandon -----------------------------------------------------------------------


async def test_cancel_kills_a_running_command_and_reports_cancelled(
    region: FakeRegion, start_worker: Callable[..., RunningWorker], tmp_path: Path
) -> None:
    start_worker(region.port)
    stream = await region.stream(0)
    pid_file = tmp_path / "pid"
    stream.assign(shell("c1", f"echo $$ > {pid_file}; exec sleep 60"))
    await stream.wait_for(is_kind("started"))
    await wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    pid = int(pid_file.read_text())
    cancelled_at = time.monotonic()
    stream.cancel(ref("c1"), reason="operator asked")
    result = await stream.result_of("c1")
    assert time.monotonic() - cancelled_at < 2
    assert result.state == run_pb2.RUN_STATE_CANCELLED
    assert result.error == "cancelled: operator asked"
    assert result.HasField("started_at")
    assert not pid_alive(pid)


async def test_a_cancel_for_an_unknown_or_finished_run_is_ignored(
    region: FakeRegion, start_worker: Callable[..., RunningWorker]
) -> None:
    start_worker(region.port)
    stream = await region.stream(0)
    stream.assign(shell("f1", "echo done"))
    await stream.result_of("f1")
    stream.cancel(ref("f1"), ref("nobody"))
    count = len(stream.received)
    await stream.heartbeat(lambda h: h.free_slots == 2)
    await stream.wait_for(is_kind("heartbeat"), after=count + 1)
    assert [r.run.run_id for r in stream.results()] == ["f1"]


async def test_a_cancel_under_an_older_epoch_does_not_stop_a_newer_attempt(
    region: FakeRegion, start_worker: Callable[..., RunningWorker]
) -> None:
    start_worker(region.port)
    stream = await region.stream(0)
    stream.assign(shell("e1", "sleep 0.5; echo ok", epoch=3))
    await stream.wait_for(is_kind("started"))
    stream.cancel(ref("e1", epoch=2))
    result = await stream.result_of("e1")
    assert result.state == run_pb2.RUN_STATE_SUCCEEDED
    assert result.run.epoch == 3


async def test_welcome_abandon_kills_runs_without_a_result(
    region: FakeRegion, start_worker: Callable[..., RunningWorker], tmp_path: Path
) -> None:
    start_worker(region.port)
    first = await region.stream(0)
    pid_file = tmp_path / "pid"
    first.assign(shell("a1", f"echo $$ > {pid_file}; exec sleep 60"), shell("a2", "sleep 0.5"))
    await first.wait_for(lambda m: len(first.started()) == 2)
    await wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    pid = int(pid_file.read_text())
    region.abandon = [ref("a1")]
    first.end()
    second = await region.stream(1)
    assert sorted(running_ids(second.registration.running)) == ["a1", "a2"]
    await wait_until(lambda: not pid_alive(pid))
    assert (await second.result_of("a2")).state == run_pb2.RUN_STATE_SUCCEEDED
    await second.heartbeat(lambda h: h.free_slots == 2 and h.outbox_size == 0)
    assert [r.run.run_id for r in first.results() + second.results()] == ["a2"]


# ---- the outbox across reconnects ---------------------------------------------------------------


async def test_unacked_results_are_resent_on_every_new_stream_until_acked(
    region: FakeRegion, start_worker: Callable[..., RunningWorker]
) -> None:
    region.auto_ack = False
    start_worker(region.port)
    first = await region.stream(0)
    first.assign(shell("o1", "sleep 0.5; echo survived"))
    await first.wait_for(is_kind("started"))
    first.end()  # the stream drops mid-run; the command keeps running
    second = await region.stream(1)
    assert running_ids(second.registration.running) == ["o1"]
    result = await second.result_of("o1")
    assert result.state == run_pb2.RUN_STATE_SUCCEEDED
    assert result.output_tail == "survived\n"
    assert first.results() == []
    await second.heartbeat(lambda h: h.outbox_size == 1)
    second.abort()  # not acked: the next stream must carry it again
    third = await region.stream(2)
    assert list(third.registration.running) == []
    assert await third.result_of("o1") == result
    assert third.kinds().index("results") > 0  # after register
    third.ack(ref("o1"))
    await third.heartbeat(lambda h: h.outbox_size == 0)
    third.end()
    fourth = await region.stream(3)
    await fourth.heartbeat(lambda h: h.outbox_size == 0)
    count = len(fourth.received)
    await fourth.wait_for(is_kind("heartbeat"), after=count)
    assert fourth.results() == []


async def test_the_worker_reconnects_when_the_region_starts_after_it(
    start_worker: Callable[..., RunningWorker],
) -> None:
    port = free_port()
    worker = start_worker(port).worker
    await asyncio.sleep(0.5)  # a few failed attempts
    assert worker.link.state is LinkState.DISCONNECTED
    region = FakeRegion()
    server, _ = await start_server(region, port)
    try:
        stream = await region.stream(0)
        stream.assign(shell("late", "echo ok"))
        assert (await stream.result_of("late")).state == run_pb2.RUN_STATE_SUCCEEDED
        assert worker.status()["link"] == "connected"
    finally:
        await server.stop(grace=None)


async def test_runs_keep_going_while_the_region_is_down_and_report_when_it_returns(
    tmp_path: Path,
) -> None:
    region = FakeRegion()
    server, port = await start_server(region)
    handle = RunningWorker(Worker(settings(port), backoff=Backoff(timedelta(milliseconds=20))))
    try:
        stream = await region.stream(0)
        stream.assign(shell("down", "sleep 0.5; echo ok"))
        await stream.wait_for(is_kind("started"))
        await server.stop(grace=None)
        await wait_until(lambda: handle.worker.link.state is LinkState.DISCONNECTED)
        await wait_until(lambda: len(handle.worker.outbox) == 1)  # finished while down
        region = FakeRegion()
        server, _ = await start_server(region, port)
        back = await region.stream(0)
        assert list(back.registration.running) == []
        assert (await back.result_of("down")).output_tail == "ok\n"
        await back.heartbeat(lambda h: h.outbox_size == 0)
    finally:
        await handle.close()
        await server.stop(grace=None)


# ---- shutdown ------------------------------------------------------------------------------


async def test_graceful_stop_drains_and_lets_a_short_run_finish(
    region: FakeRegion, start_worker: Callable[..., RunningWorker]
) -> None:
    handle = start_worker(region.port)
    stream = await region.stream(0)
    stream.assign(shell("g1", "sleep 0.5; echo finished"))
    await stream.wait_for(is_kind("started"))
    handle.worker.stop("test asked")
    draining = await stream.wait_for(is_kind("draining"))
    assert draining.draining.reason == "test asked"
    assert draining.draining.grace.ToTimedelta() == timedelta(seconds=5)
    await stream.heartbeat(lambda h: h.free_slots == 0)
    stream.assign(shell("g2", "echo too late"))
    await handle.stopped()
    assert (await stream.result_of("g1")).output_tail == "finished\n"
    late = await stream.result_of("g2")
    assert late.state == run_pb2.RUN_STATE_FAILED
    assert "draining" in late.error
    assert len(handle.worker.outbox) == 0
    await asyncio.wait_for(stream.finished.wait(), WAIT)  # the worker closed its stream


async def test_stop_past_the_shutdown_timeout_kills_runs_and_reports_them_failed(
    region: FakeRegion, start_worker: Callable[..., RunningWorker], tmp_path: Path
) -> None:
    handle = start_worker(region.port, shutdown_timeout=timedelta(milliseconds=300))
    stream = await region.stream(0)
    pid_file = tmp_path / "pid"
    stream.assign(shell("k1", f"echo $$ > {pid_file}; exec sleep 60"))
    await stream.wait_for(is_kind("started"))
    await wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    handle.worker.stop("SIGTERM")
    await handle.stopped()
    result = await stream.result_of("k1")
    assert result.state == run_pb2.RUN_STATE_FAILED
    assert result.error.startswith("worker shut down (SIGTERM)")
    assert not pid_alive(int(pid_file.read_text()))


async def test_a_drain_request_from_the_region_stops_the_worker(
    region: FakeRegion, start_worker: Callable[..., RunningWorker]
) -> None:
    handle = start_worker(region.port)
    stream = await region.stream(0)
    grace = Duration()
    grace.FromTimedelta(timedelta(seconds=1))
    stream.send(region_pb2.RegionMessage(drain=region_pb2.DrainWorker(reason="bye", grace=grace)))
    await handle.stopped()
    draining = (await stream.wait_for(is_kind("draining"))).draining
    assert "the region asked to drain: bye" in draining.reason
    assert draining.grace.ToTimedelta() == timedelta(seconds=1)


async def test_a_draining_worker_says_so_before_it_refuses_anything(
    region: FakeRegion, start_worker: Callable[..., RunningWorker]
) -> None:
    """An assignment crossing the drain request is refused only after ``draining`` is sent:
    a region that heard the refusal first would count it as the worker's failure and offer the
    run to it again."""
    handle = start_worker(region.port)
    stream = await region.stream(0)
    # A run still going holds the drain open for its grace, so the crossing assignment is read
    # before the worker closes its stream (with none, it may stop first and never read it).
    stream.assign(shell("busy", "sleep 30"))
    await stream.wait_for(is_kind("started"))
    grace = Duration()
    grace.FromTimedelta(timedelta(seconds=3))
    stream.send(region_pb2.RegionMessage(drain=region_pb2.DrainWorker(reason="bye", grace=grace)))
    stream.assign(shell("crossing", "echo too late"))
    await handle.stopped()
    refused = await stream.result_of("crossing")
    assert "draining" in refused.error
    kinds = [kind for kind in stream.kinds() if kind in ("draining", "results")]
    assert kinds[0] == "draining", stream.kinds()


async def test_stop_waits_for_acks_within_the_flush_timeout_and_a_second_stop_forces_it(
    region: FakeRegion, start_worker: Callable[..., RunningWorker]
) -> None:
    region.auto_ack = False
    handle = start_worker(region.port, flush_timeout=timedelta(seconds=60))
    stream = await region.stream(0)
    stream.assign(shell("u1", "echo unacked"))
    await stream.result_of("u1")
    handle.worker.stop("first")
    await stream.wait_for(is_kind("draining"))
    await asyncio.sleep(0.3)
    assert not handle.task.done()  # still waiting for the ack
    handle.worker.stop("second", force=True)
    await handle.stopped()
    assert handle.worker.outbox.keys != ()


# ---- HTTP -----------------------------------------------------------------------------------


def http_get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text page; 0 when absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        return str(response.read().decode())


async def health_check(address: Address) -> int:
    """The whole server's status over ``grpc.health.v1.Health/Check``."""
    async with grpc.aio.insecure_channel(str(address)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        return int((await stub.Check(request, timeout=WAIT)).status)


async def test_health_endpoints_report_liveness_and_readiness(
    start_worker: Callable[..., RunningWorker],
) -> None:
    port = free_port()
    handle = start_worker(port)
    worker = handle.worker
    await wait_until(lambda: worker.http_address.port != 0 and worker.grpc_address.port != 0)
    base = f"http://127.0.0.1:{worker.http_address.port}"
    assert await asyncio.to_thread(http_get, base + "/healthz") == (200, {"status": "alive"})
    status, body = await asyncio.to_thread(http_get, base + "/readyz")
    assert status == 503
    assert body["failing"] == ["region_link"]
    assert body["components"]["region_link"]["state"] == "disconnected"  # type: ignore[index]
    assert body["ready"] is False
    assert await health_check(worker.grpc_address) == NOT_SERVING
    region = FakeRegion()
    server, _ = await start_server(region, port)
    try:
        stream = await region.stream(0)
        stream.assign(shell("h1", "exit 4"))
        await stream.result_of("h1")
        await wait_until(lambda: len(worker.outbox) == 0)
        status, body = await asyncio.to_thread(http_get, base + "/readyz")
        assert status == 200
        components: Any = body["components"]
        assert components["region_link"]["state"] == "connected"
        assert components["slots"] == {"ok": True, "total": 2, "in_use": 0, "outbox": 0}
        last = components["last_outcome"]["run"]
        assert (last["run_id"], last["state"], last["exit_code"]) == ("h1", "failed", 4)
        page = await asyncio.to_thread(http_text, base + "/metrics")
        labels = {"worker": worker.worker_id}
        assert metric(page, "taskmesh_worker_runs_finished_total", **labels, state="failed") == 1
        assert metric(page, "taskmesh_worker_slots", **labels) == 2
        assert metric(page, "taskmesh_worker_region_link_up", **labels) == 1
        await wait_until_serving(worker.grpc_address)
        worker.stop("test")
        await handle.stopped()
    finally:
        await server.stop(grace=None)


async def wait_until_serving(address: Address) -> None:
    """Wait for the worker's gRPC health to follow its readiness to SERVING."""
    async with asyncio.timeout(WAIT):
        while await health_check(address) != SERVING:
            await asyncio.sleep(0.05)


async def test_grpc_health_watch_sees_serving_then_not_serving_on_drain(
    region: FakeRegion, start_worker: Callable[..., RunningWorker]
) -> None:
    handle = start_worker(region.port)
    worker = handle.worker
    await region.stream(0)
    await wait_until(lambda: worker.grpc_address.port != 0)
    async with grpc.aio.insecure_channel(str(worker.grpc_address)) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=WAIT
        )
        seen = [(await watch.read()).status]
        while seen[-1] != SERVING:
            seen.append((await watch.read()).status)
        worker.stop("test")
        assert (await watch.read()).status == NOT_SERVING
        watch.cancel()
    await handle.stopped()


async def test_taskmesh_health_names_the_failing_link_of_a_worker(
    start_worker: Callable[..., RunningWorker],
) -> None:
    """`taskmesh health`'s probe of one worker: gRPC NOT_SERVING and /readyz's failing part."""
    worker = start_worker(free_port()).worker  # no region listens there
    await wait_until(lambda: worker.http_address.port != 0 and worker.grpc_address.port != 0)
    target = Target("w", "worker", str(worker.http_address), str(worker.grpc_address))
    async with aiohttp.ClientSession() as session:
        verdict = await probe(target, session, WAIT)
    assert verdict.failing == ("grpc NOT_SERVING", "region_link")
    assert not verdict.ready
    table = format_table([verdict]).splitlines()
    assert table[1].split() == [
        "w",
        "worker",
        str(worker.http_address),
        "NOT_SERVING",
        "NO",
        "grpc",
        "NOT_SERVING,",
        "region_link",
    ]


async def test_a_fixed_http_port_in_use_fails_the_start(
    region: FakeRegion, start_worker: Callable[..., RunningWorker]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        handle = start_worker(region.port, http=Address("127.0.0.1", port))
        with pytest.raises(OSError, match="address already in use"):
            await handle.stopped()


# ---- the entry point, as a real process ---------------------------------------------------------

WORKER_MAIN = """
import argparse, sys
from taskmesh.worker.entrypoint import register_cli
parser = argparse.ArgumentParser(prog="taskmesh")
register_cli(parser.add_subparsers(required=True))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.handler(args, {}))
"""


async def spawn_worker(region: FakeRegion, tmp_path: Path) -> asyncio.subprocess.Process:
    """``taskmesh worker`` in a child process (through the CLI hook), joined to ``region``."""
    topology = tmp_path / "topology.yaml"
    topology.write_text(
        "regions:\n  - name: eu\n    grpc: 127.0.0.1:0\n"
        "    workers: {slots: 2, shutdown_timeout: 5s, heartbeat_interval: 100ms}\n"
    )
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER_MAIN,
        "worker",
        "--region=eu",
        f"--topology={topology}",
        "--id=proc-1",
        f"--region-address=127.0.0.1:{region.port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def ready_line(process: asyncio.subprocess.Process) -> str:
    """The READY line the worker prints on stdout once it serves."""
    assert process.stdout is not None
    async with asyncio.timeout(WAIT):
        return (await process.stdout.readline()).decode().strip()


async def exit_status(process: asyncio.subprocess.Process) -> tuple[int, str]:
    async with asyncio.timeout(WAIT):
        _, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_sigterm_drains_the_worker_process_and_it_exits_0(
    region: FakeRegion, tmp_path: Path
) -> None:
    process = await spawn_worker(region, tmp_path)
    try:
        ready = await ready_line(process)
        addresses = parse_ready_line(ready)
        assert addresses["http"].startswith("127.0.0.1:")
        health = await asyncio.to_thread(http_get, f"http://{addresses['http']}/healthz")
        assert health == (200, {"status": "alive"})
        assert addresses["grpc"].startswith("127.0.0.1:")
        stream = await region.stream(0)
        assert stream.registration.worker_id == "proc-1"
        stream.assign(shell("p1", "sleep 0.5; echo ok"))
        await stream.wait_for(is_kind("started"))
        process.send_signal(signal.SIGTERM)
        assert (await stream.wait_for(is_kind("draining"))).draining.reason == "SIGTERM"
        assert (await stream.result_of("p1")).output_tail == "ok\n"
        status, logs = await exit_status(process)
    finally:
        if process.returncode is None:
            process.kill()
    assert status == 0
    lines = [json.loads(line) for line in logs.splitlines()]  # not a terminal: JSON lines
    messages = [line["message"] for line in lines]
    assert "run p1@1 of task task-of-p1 (test), attempt 1: started" in messages
    assert "worker proc-1 stopped" in messages
    about_p1 = [line for line in lines if line.get("run_id") == "p1"]
    assert len(about_p1) >= 2  # started, finished
    for line in about_p1:
        fields = (line["task_id"], line["epoch"], line["worker"], line["region"])
        assert fields == ("task-of-p1", "1", "proc-1", "eu")


async def test_a_second_sigterm_stops_the_worker_process_at_once(
    region: FakeRegion, tmp_path: Path
) -> None:
    process = await spawn_worker(region, tmp_path)
    try:
        stream = await region.stream(0)
        stream.assign(shell("p2", "sleep 60"))
        await stream.wait_for(is_kind("started"))
        process.send_signal(signal.SIGTERM)
        await stream.wait_for(is_kind("draining"))
        process.send_signal(signal.SIGTERM)
        result = await stream.result_of("p2")
        status, _ = await exit_status(process)
    finally:
        if process.returncode is None:
            process.kill()
    assert status == 0
    assert result.state == run_pb2.RUN_STATE_FAILED
    assert result.error == "worker shut down (SIGTERM) before the run finished"
