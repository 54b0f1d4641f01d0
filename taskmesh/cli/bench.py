"""``taskmesh bench``: start a local cluster on a durable embedded PostgreSQL and measure it."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from taskmesh.common.command_line import EXIT_OK

if TYPE_CHECKING:
    from taskmesh.cli.shared import Subcommands

SCENARIOS = ("throughput", "pickup", "submit", "probe", "memory", "cluster", "ledger")


def add_bench_command(commands: Subcommands) -> None:
    """Register ``taskmesh bench``."""
    bench = commands.add_parser(
        "bench",
        help="measure throughput, latency, submission, memory and scale on a local cluster",
        description="Start a local cluster (2 regions, 2 workers each by default) on a durable "
        "embedded PostgreSQL, run no-op tasks through it, print a table and optionally write "
        "JSON and a PNG of the pickup latency distribution.",
    )
    bench.add_argument(
        "--scenario",
        type=scenario_list,
        default=frozenset(SCENARIOS),
        metavar="NAMES",
        help=f"comma-separated, from {','.join(SCENARIOS)} (default: all)",
    )
    bench.add_argument("--runs", type=at_least(1), default=50_000, help="throughput runs")
    bench.add_argument(
        "--rates",
        type=rate_list,
        default=(200, 1000),
        metavar="R1,R2",
        help="offered loads for pickup latency, runs/s (default: 200,1000)",
    )
    bench.add_argument(
        "--pickup-seconds", type=positive_float, default=10.0, help="seconds per offered load"
    )
    bench.add_argument(
        "--queued", type=at_least(1), default=100_000, help="runs a region holds for memory"
    )
    bench.add_argument(
        "--cluster-regions", type=at_least(1), default=10, help="regions of the scaled cluster"
    )
    bench.add_argument(
        "--cluster-workers",
        type=at_least(1),
        default=1000,
        help="simulated workers of the scaled cluster, in all",
    )
    bench.add_argument(
        "--cluster-runs",
        type=at_least(1),
        default=20_000,
        help="runs through the scaled cluster and through the baseline",
    )
    bench.add_argument(
        "--ledger-rows",
        type=size_list,
        default=(10_000, 1_000_000),
        metavar="N1,N2",
        help="ledger sizes (finished runs of history) for the claim cost "
        "(default: 10000,1000000; add 10000000 for the full figure)",
    )
    bench.add_argument(
        "--claims", type=at_least(1), default=50, help="timed claims per ledger size"
    )
    bench.add_argument("--workers", type=at_least(1), default=2, help="workers per region")
    bench.add_argument("--slots", type=at_least(1), default=16, help="slots per worker")
    bench.add_argument(
        "--database-url", help="measure this PostgreSQL instead of a fresh embedded one"
    )
    bench.add_argument("--work-dir", type=Path, help="keep topologies, logs and ledger here")
    bench.add_argument("--json", type=Path, metavar="PATH", help="write the report as JSON")
    bench.add_argument("--plot", type=Path, metavar="PATH", help="write the latency plot (PNG)")
    bench.set_defaults(handler=run_bench_command)


def scenario_list(text: str) -> frozenset[str]:
    """``throughput,pickup`` → the set of scenario names; unknown names are refused."""
    names = frozenset(name.strip() for name in text.split(",") if name.strip())
    unknown = sorted(names - set(SCENARIOS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(unknown) or '(none given)'}; "
            f"choose from {','.join(SCENARIOS)}"
        )
    return names


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse type: a number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return value


def rate_list(text: str) -> tuple[int, ...]:
    """``200,1000`` → (200, 1000); each a positive integer."""
    parse = at_least(1)
    return tuple(parse(part.strip()) for part in text.split(","))


def size_list(text: str) -> tuple[int, ...]:
    """``10000,1000000`` → (10000, 1000000); each at least 1, ascending and distinct."""
    sizes = rate_list(text)
    if list(sizes) != sorted(set(sizes)):
        raise argparse.ArgumentTypeError(f"sizes must be distinct and ascending, got {text}")
    return sizes


def run_bench_command(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run the benchmark and print its table."""
    # Imported here: `taskmesh --help` and every other command do not pay for it.
    from taskmesh.bench.cluster import ClusterShape  # noqa: PLC0415
    from taskmesh.bench.cluster_scale import ClusterScale  # noqa: PLC0415
    from taskmesh.bench.report import format_table, table_rows  # noqa: PLC0415
    from taskmesh.bench.runner import BenchOptions, run_bench  # noqa: PLC0415

    options = BenchOptions(
        scenarios=args.scenario,
        runs=args.runs,
        rates=args.rates,
        pickup_seconds=args.pickup_seconds,
        queued=args.queued,
        ledger_rows=args.ledger_rows,
        claims=args.claims,
        cluster=ClusterScale(
            regions=args.cluster_regions, workers=args.cluster_workers, runs=args.cluster_runs
        ),
        shape=ClusterShape(workers_per_region=args.workers, slots=args.slots),
        database_url=args.database_url,
        work_dir=args.work_dir,
        json_path=args.json,
        plot_path=args.plot,
    )
    report = run_bench(options)
    print(format_table(table_rows(report["results"])), flush=True)
    return EXIT_OK
