"""Autoscaling: the topology section, the desired-size formula, the decision loop, the command.

The decision tests drive a real region runtime (queue, registry) with a controlled clock and
record the commands the autoscaler asks for; the command tests run real processes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml

from taskmesh.common.errors import ConfigError
from taskmesh.common.model import ClaimedRun, Executor, Placement, Transition, TransitionOutcome
from taskmesh.common.topology import (
    AutoscalingConfig,
    RegionConfig,
    WorkerPoolConfig,
    dump_topology,
    parse_topology,
)
from taskmesh.region.autoscaler import Autoscaler, run_scaling_command
from taskmesh.region.breakers import BreakerBoard
from taskmesh.region.holdings import QueuedRun
from taskmesh.region.ledger_writer import LedgerWriter
from taskmesh.region.runtime import RegionRuntime
from taskmesh.region.status import readiness

COMMAND = "scale --region {region} --to {desired} --from {current} --dial {address}"


def topology_with(autoscaling: object) -> dict[str, Any]:
    return {"regions": [{"name": "eu", "autoscaling": autoscaling}]}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_topology(data)
    return raised.value.problems


def test_the_section_is_parsed_with_defaults() -> None:
    region = parse_topology(topology_with({"command": COMMAND, "max_workers": 4})).regions[0]
    assert region.autoscaling == AutoscalingConfig(
        command=tuple(COMMAND.split()),
        max_workers=4,
    )
    assert parse_topology({"regions": [{"name": "eu"}]}).regions[0].autoscaling is None


def test_the_section_round_trips_through_the_writer() -> None:
    section = {
        "command": "sh -c 'echo {desired} > \"/tmp/pool size\"'",
        "min_workers": 0,
        "max_workers": 3,
        "target_per_slot": 2.5,
        "cooldown": "10s",
        "interval": "500ms",
        "command_timeout": "1m",
    }
    topology = parse_topology(topology_with(section))
    assert parse_topology(yaml.safe_load(dump_topology(topology))) == topology


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"max_workers": 3}, "regions[0].autoscaling.command: missing; the command that scales"),
        (
            {"command": "scale {desire}"},
            "regions[0].autoscaling.command: expected the placeholders {region}, {desired}, "
            "{current}, {address}, got {desire}",
        ),
        (
            {"command": "scale {desired"},
            "regions[0].autoscaling.command: expected placeholders such as {desired}",
        ),
        ({"command": "scale 'open"}, "regions[0].autoscaling.command: expected a command line"),
        (
            {"command": "scale", "min_workers": 5, "max_workers": 2},
            "regions[0].autoscaling.min_workers: expected at most max_workers (2), got 5",
        ),
        (
            {"command": "scale", "target_per_slot": 0},
            "regions[0].autoscaling.target_per_slot: expected a positive number, got 0",
        ),
        ({"command": "scale", "cooldwn": "1s"}, 'unknown key, did you mean "cooldown"?'),
        ("scale", "regions[0].autoscaling: expected a mapping"),
    ],
)
def test_bad_sections_are_named(section: object, problem: str) -> None:
    (found,) = problems(topology_with(section))
    assert problem in found


@pytest.mark.parametrize(
    ("load", "slots", "target", "desired"),
    [(0, 4, 1.0, 1), (1, 4, 1.0, 1), (9, 4, 1.0, 3), (9, 4, 2.0, 2), (100, 4, 1.0, 5)],
)
def test_desired_workers(load: int, slots: int, target: float, desired: int) -> None:
    config = AutoscalingConfig(command=("x",), min_workers=1, max_workers=5, target_per_slot=target)
    assert config.desired_workers(load, slots) == desired


class NoLedger:
    """The autoscaler never writes; the writer needs a store all the same."""

    async def record_transitions(
        self, items: Sequence[Transition], *, lost_retry_limit: int
    ) -> list[TransitionOutcome]:
        return [TransitionOutcome(item) for item in items]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Commands:
    """Records the argv of every command and reports it succeeded (or failed, if told)."""

    def __init__(self) -> None:
        self.runs: list[list[str]] = []
        self.succeed = True

    async def __call__(self, argv: Sequence[str], time_limit: float) -> bool:
        self.runs.append(list(argv))
        return self.succeed


def queue_runs(runtime: RegionRuntime, count: int) -> None:
    now = datetime.now(UTC)
    for _ in range(count):
        claimed = ClaimedRun(
            run_id=uuid4(),
            task_id=uuid4(),
            task_name="t",
            attempt=1,
            epoch=1,
            priority=0,
            region="eu",
            due_at=now,
            delegated_at=now,
            command="true",
            executor=Executor.SHELL,
            args=(),
            kind="default",
            placement=Placement.PREFER,
        )
        runtime.enqueue(QueuedRun(claimed, 0, runtime.clock()))


async def test_the_autoscaler_follows_the_load_with_a_cooldown() -> None:
    config = AutoscalingConfig(
        command=("scale", "{region}", "{desired}", "{current}"),
        min_workers=1,
        max_workers=4,
        cooldown=timedelta(seconds=30),
    )
    clock = Clock()
    region = RegionConfig(name="eu", workers=WorkerPoolConfig(slots=2), autoscaling=config)
    runtime = RegionRuntime(
        region,
        LedgerWriter(NoLedger(), lost_retry_limit=0),
        BreakerBoard(region.breakers),
        clock=clock,
    )
    commands = Commands()
    autoscaler = Autoscaler(runtime, config, commands)

    await autoscaler.evaluate()  # no worker yet, but within the first cooldown
    assert (commands.runs, runtime.desired_workers) == ([], 1)
    report = readiness(runtime, ledger_reachable=True).body()["components"]
    assert report["autoscaling"]["desired_workers"] == 1  # type: ignore[index]
    clock.now += 31
    await autoscaler.evaluate()
    assert commands.runs == [["scale", "eu", "1", "0"]]

    queue_runs(runtime, 7)  # 7 runs, 2 slots per worker: 4 workers
    await autoscaler.evaluate()
    assert (len(commands.runs), runtime.desired_workers) == (1, 4)  # cooling down
    clock.now += 31
    commands.succeed = False
    await autoscaler.evaluate()
    assert commands.runs[-1] == ["scale", "eu", "4", "0"]
    clock.now += 31
    commands.succeed = True
    await autoscaler.evaluate()  # the failed command is tried again after the cooldown
    assert commands.runs[-1] == ["scale", "eu", "4", "0"]
    clock.now += 31
    await autoscaler.evaluate()  # nothing changed: nothing to run
    assert len(commands.runs) == 3

    while runtime.queue.pop() is not None:
        pass
    clock.now += 31
    await autoscaler.evaluate()
    assert commands.runs[-1] == ["scale", "eu", "1", "0"]


async def test_a_command_s_output_is_logged_and_its_status_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="taskmesh.region.autoscaler"):
        assert await run_scaling_command(["sh", "-c", "echo scaled to 3; echo oops >&2"], 30)
        assert not await run_scaling_command(["sh", "-c", "exit 3"], 30)
        assert not await run_scaling_command(["/nonexistent/scale"], 30)
    messages = [record.getMessage() for record in caplog.records]
    assert "autoscaling command: scaled to 3" in messages
    assert "autoscaling command: oops" in messages
    assert "autoscaling: the command exited with status 3" in messages
    assert any(m.startswith("autoscaling: the command could not start") for m in messages)


async def test_a_command_past_its_time_is_killed_with_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {marker}; wait"
    started = time.monotonic()
    assert not await run_scaling_command(["sh", "-c", script], 0.5)
    assert time.monotonic() - started < 30
    child = int(marker.read_text())
    deadline = time.monotonic() + 10
    while alive(child):
        assert time.monotonic() < deadline, f"the command's child {child} outlived it"
        await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
