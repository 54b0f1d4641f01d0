"""Each daemon as systemd runs it: a real process, ``$NOTIFY_SOCKET`` bound by the test.

systemd's side is a datagram socket and two variables. The process must say ``READY=1`` once
it serves, then ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` from its main loop, and
``STOPPING=1`` when SIGTERM starts its shutdown; it then exits 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

from taskmesh.common.topology import Address, RegionConfig, Topology, dump_topology

WAIT = 60.0  # seconds: generous, this machine is shared
WATCHDOG_USEC = 400_000  # pings expected every 200 ms
PINGS = 5


def topology_file(tmp_path: Path) -> Path:
    """One region ``r1`` on free ports."""
    loopback = Address("127.0.0.1", 0)
    topology = Topology(regions=(RegionConfig(name="r1", grpc=loopback, http=loopback),))
    path = tmp_path / "topology.yaml"
    path.write_text(dump_topology(topology))
    return path


def daemon_argv(tier: str, topology: Path, database_url: str) -> list[str]:
    """``taskmesh master|region|worker`` with what each needs to start on its own."""
    command = [sys.executable, "-m", "taskmesh", tier, "--topology", str(topology)]
    if tier == "master":
        return [*command, "--database-url", database_url]
    if tier == "region":
        return [*command, "--name", "r1", "--database-url", database_url]
    # A worker serves (and is ready) while it keeps trying to reach its region.
    return [*command, "--region", "r1", "--region-address", "127.0.0.1:9"]


async def receive(receiver: socket.socket) -> str:
    """The next notification."""
    loop = asyncio.get_running_loop()
    return (await asyncio.wait_for(loop.sock_recv(receiver, 256), WAIT)).decode()


async def test_ready_then_watchdog_pings_then_stopping(database_url: str, tmp_path: Path) -> None:
    """The three tiers at once (each on its own socket): their start-ups overlap."""
    topology = topology_file(tmp_path)
    tiers = ("master", "region", "worker")
    await asyncio.gather(
        *(notified(daemon_argv(tier, topology, database_url), tmp_path / tier) for tier in tiers)
    )


async def notified(argv: list[str], base: Path) -> None:
    """Run one daemon under a fake systemd and check what it says, in order."""
    path = base.with_suffix(".sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.setblocking(False)
        env = {k: v for k, v in os.environ.items() if k != "TASKMESH_DATABASE_URL"}
        env.update(NOTIFY_SOCKET=str(path), WATCHDOG_USEC=str(WATCHDOG_USEC))
        process = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            await expect_notifications(receiver, process)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def expect_notifications(
    receiver: socket.socket, process: asyncio.subprocess.Process
) -> None:
    """READY=1, paced WATCHDOG=1 pings, STOPPING=1 on SIGTERM, then exit 0."""
    assert await receive(receiver) == "READY=1"
    started = time.monotonic()
    pings = [await receive(receiver) for _ in range(PINGS)]
    elapsed = time.monotonic() - started
    assert pings == ["WATCHDOG=1"] * PINGS
    # Paced by the interval, not sent in a burst: five pings take four intervals at least.
    assert elapsed >= (PINGS - 1) * WATCHDOG_USEC / 2 / 1e6 * 0.9
    process.send_signal(signal.SIGTERM)
    notices = [await receive(receiver)]
    while notices[-1] == "WATCHDOG=1":  # one may have been on its way
        notices.append(await receive(receiver))
    assert notices[-1] == "STOPPING=1"
    assert await asyncio.wait_for(process.wait(), WAIT) == 0
