"""``taskmesh worker``: the worker's entry point, and the only place it handles signals.

``register_cli`` adds the subcommand to the ``taskmesh`` parser; its handler loads the topology
and runs ``serve_worker``, then prints ``READY http=HOST:PORT`` on stdout (what ``taskmesh up``
waits for) and tells systemd ``READY=1``. The first SIGTERM or SIGINT drains the worker
(bounded by the pool's ``shutdown_timeout``); a second one stops it at once, killing what still
runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from taskmesh.common.topology import Address, InvalidValue, Topology, load_topology, parse_address
from taskmesh.worker.daemon import Worker
from taskmesh.worker.settings import WorkerSettings

if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


async def serve_worker(
    topology: Topology,
    region: str,
    *,
    slots: int | None = None,
    worker_id: str | None = None,
    region_address: Address | None = None,
    http_address: Address | None = None,
    on_ready: Callable[[Worker], None] | None = None,
    handle_signals: bool = True,
) -> None:
    """Run one worker of ``region`` until SIGTERM/SIGINT, then drain and return.

    Arguments given override the topology. ``on_ready`` gets the worker once its HTTP endpoint
    is bound (``worker.http_address``); without ``handle_signals`` the caller stops it with
    ``worker.stop()``.
    """
    settings = WorkerSettings.from_topology(
        topology,
        region,
        slots=slots,
        worker_id=worker_id,
        region_address=region_address,
        http=http_address,
    )
    worker = Worker(settings)
    if not handle_signals:
        await worker.run(on_ready)
        return
    with _stop_on_signals(worker):
        await worker.run(on_ready)


@contextlib.contextmanager
def _stop_on_signals(worker: Worker) -> Iterator[None]:
    """First signal: drain. Second: stop at once. Handlers are removed on the way out."""
    loop = asyncio.get_running_loop()
    received: list[signal.Signals] = []

    def on_signal(number: signal.Signals) -> None:
        received.append(number)
        if len(received) == 1:
            logger.info("%s received: draining (send it again to stop at once)", number.name)
        else:
            logger.warning("%s received again: stopping at once", number.name)
        worker.stop(number.name, force=len(received) > 1)

    for number in STOP_SIGNALS:
        loop.add_signal_handler(number, on_signal, number)
    try:
        yield
    finally:
        for number in STOP_SIGNALS:
            loop.remove_signal_handler(number)


def register_cli(commands: Subcommands) -> None:
    """Add ``taskmesh worker`` to the ``taskmesh`` command's subparsers."""
    parser = commands.add_parser("worker", help="run one worker of a region")
    parser.add_argument("--region", required=True, help="name of the region to join")
    parser.add_argument("--topology", type=Path, required=True, help="topology file")
    parser.add_argument(
        "--slots", type=_positive, help="concurrent runs (default: the region's workers.slots)"
    )
    parser.add_argument(
        "--id", dest="worker_id", help="worker id, unique in the region (default: HOSTNAME-PID)"
    )
    parser.add_argument(
        "--region-address",
        type=_address,
        metavar="HOST:PORT",
        help="the region's bound gRPC address (default: the topology's; required if its port is 0)",
    )
    parser.add_argument(
        "--http-address",
        type=_address,
        metavar="HOST:PORT",
        help="/healthz and /readyz listener (default: the region's workers.http)",
    )
    parser.set_defaults(handler=run_worker_command)


def run_worker_command(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """The ``taskmesh worker`` handler: serve until a signal, then exit 0."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    topology = load_topology(args.topology, environ=env)
    asyncio.run(
        serve_worker(
            topology,
            args.region,
            slots=args.slots,
            worker_id=args.worker_id,
            region_address=args.region_address,
            http_address=args.http_address,
            on_ready=lambda worker: announce(worker, env),
        )
    )
    return 0


def announce(worker: Worker, env: Mapping[str, str]) -> None:
    """Print the READY line a supervisor reads, and tell systemd when it runs us."""
    print(f"READY http={worker.http_address}", flush=True)
    notify_systemd(env, "READY=1")


def notify_systemd(env: Mapping[str, str], state: str) -> None:
    """Send ``state`` to ``$NOTIFY_SOCKET`` (sd_notify); a no-op outside systemd."""
    path = env.get("NOTIFY_SOCKET")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError as error:
            logger.warning("could not notify systemd: %s", error)


def _positive(text: str) -> int:
    """An argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _address(text: str) -> Address:
    """An argparse type: ``host:port``."""
    try:
        return parse_address(text)
    except InvalidValue as error:
        raise argparse.ArgumentTypeError(str(error)) from None
