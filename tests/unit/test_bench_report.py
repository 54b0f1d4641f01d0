"""The pure parts of `taskmesh bench`: option parsing, percentiles, the result table."""

from __future__ import annotations

import pytest

from taskmesh.bench.load import BenchmarkError, bounded
from taskmesh.bench.report import format_table, table_rows
from taskmesh.bench.scenarios import latency_summary, percentile
from taskmesh.cli import main


def test_percentile_is_nearest_rank() -> None:
    ordered = [float(value) for value in range(1, 101)]
    assert percentile(ordered, 0.50) == 50.0
    assert percentile(ordered, 0.99) == 99.0
    assert percentile(ordered, 1.0) == 100.0
    assert percentile([], 0.5) == 0.0


def test_latency_summary_is_in_milliseconds() -> None:
    assert latency_summary([0.001, 0.002, 0.010]) == {
        "p50": 2.0,
        "p90": 10.0,
        "p99": 10.0,
        "max": 10.0,
    }


def test_table_judges_the_targets() -> None:
    results = {
        "probe": {"best_batch": 500, "rows_per_second": 10_000.0},
        "throughput": {"runs": 1000, "runs_per_second": 4000.0},
        "throughput_of_probe": 0.4,
        "pickup": [
            {"rate": 200, "achieved_rate": 199.0, "p50": 5.0, "p99": 30.0, "max": 40.0},
        ],
        "memory": {
            "idle": {"worker-eu-1": 57.0, "worker-eu-2": 58.0, "master": 90.0},
            "queued": {"runs": 100_000, "rss_mib": {"region-hold": 145.0}},
        },
    }
    table = format_table(table_rows(results))
    lines = table.splitlines()
    assert lines[0].split() == ["scenario", "figure", "value", "target"]
    assert "40% of probe (≥35%: met)" in table
    assert "p99 ≤ 20 ms: MISSED" in table
    # MiB measured, MB targeted: 57 MiB is 59.8 MB, 58 MiB 60.8 MB, 145 MiB 152 MB.
    assert "60 MB ≤ 60 MB: met" in table
    assert "61 MB ≤ 60 MB: MISSED" in table
    assert "152 MB ≤ 150 MB: MISSED" in table


def test_table_judges_the_scale_targets() -> None:
    results = {
        "cluster": {
            "baseline": {"workers": 4, "throughput": {"runs": 100, "runs_per_second": 400.0}},
            "throughput": {"runs": 100, "runs_per_second": 100.0},
            "of_baseline": 0.25,
            "regions": 10,
            "workers": 1000,
            "region_rss_mib": {"idle": {"region-r01": 90.0}, "peak": {"region-r01": 95.0}},
        },
        "ledger": {
            "claim_runs": 300,
            "baseline_history_runs": 10_000,
            "sizes": [
                {
                    "history_runs": 10_000,
                    "claim_ms_p50": 10.0,
                    "claim_ms_p90": 12.0,
                    "baseline_claim_ms_p50": 10.0,
                    "over_baseline": 1.0,
                },
                {
                    "history_runs": 10_000_000,
                    "claim_ms_p50": 11.0,
                    "claim_ms_p90": 13.0,
                    "baseline_claim_ms_p50": 10.0,
                    "over_baseline": 1.1,
                },
            ],
        },
    }
    table = format_table(table_rows(results))
    assert "25% of baseline (≥50%: MISSED)" in table
    assert "1,000 workers / 10 regions" in table
    assert "region RSS with 100 workers, peak" in table
    assert "claim cost 10,000,000 / 10,000 finished runs" in table
    assert "+10%" in table
    assert "≤ +20%: met" in table


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scenario", "throughput,speed"], "unknown scenario speed"),
        (["--runs", "0"], "must be at least 1"),
        (["--rates", "200,fast"], "expected an integer"),
        (["--pickup-seconds", "-1"], "must be above 0"),
        (["--ledger-rows", "1000,100"], "distinct and ascending"),
        (["--cluster-workers", "0"], "must be at least 1"),
    ],
)
def test_bad_options_name_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *argv]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert f"argument {argv[0]}" in error


async def test_a_failed_submission_is_raised_as_itself() -> None:
    """The CLI turns a BenchmarkError into a message; a bare ExceptionGroup would be a traceback."""
    done: list[int] = []

    async def call(number: int) -> None:
        if number == 3:
            raise BenchmarkError("submission failed: UNAVAILABLE")
        done.append(number)

    with pytest.raises(BenchmarkError, match="UNAVAILABLE"):
        await bounded((call(number) for number in range(10)), limit=2)
    assert 3 not in done
