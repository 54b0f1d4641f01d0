"""Cluster activity over a recent window, in fixed time slices: throughput and pickup latency.

One statement: attempts that ended in the window (``ix_runs_finished_at``) counted per slice,
and the pickup latency (``started_at - ready_at``) of attempts that started in it
(``ix_runs_started_at``) as p50/p95 per slice. Empty slices are present with zero / no latency,
so a chart needs no gap filling.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmesh.common.model import ActivityBucket

ACTIVITY = text("""
    WITH bounds AS (
        SELECT CAST(:since AS timestamptz) AS since, CAST(:until AS timestamptz) AS until,
               CAST(:step AS double precision) AS step
    ),
    slices AS (
        SELECT n FROM generate_series(0, CAST(:count AS integer) - 1) AS n
    ),
    ended AS (
        SELECT floor(extract(epoch FROM finished_at - since) / step)::integer AS n,
               count(*) AS finished,
               count(*) FILTER (WHERE state <> 'succeeded') AS failed
        FROM runs, bounds
        WHERE finished_at >= since AND finished_at < until
        GROUP BY 1
    ),
    started AS (
        SELECT floor(extract(epoch FROM started_at - since) / step)::integer AS n,
               percentile_cont(0.5) WITHIN GROUP
                   (ORDER BY extract(epoch FROM started_at - ready_at)) AS p50,
               percentile_cont(0.95) WITHIN GROUP
                   (ORDER BY extract(epoch FROM started_at - ready_at)) AS p95
        FROM runs, bounds
        WHERE started_at >= since AND started_at < until
        GROUP BY 1
    )
    SELECT slices.n, coalesce(ended.finished, 0) AS finished, coalesce(ended.failed, 0) AS failed,
           started.p50, started.p95
    FROM slices
    LEFT JOIN ended ON ended.n = slices.n
    LEFT JOIN started ON started.n = slices.n
    ORDER BY slices.n
""")


async def run_activity(
    connection: AsyncConnection, until: datetime, window: timedelta, step: timedelta
) -> list[ActivityBucket]:
    """The slices of ``step`` covering ``window`` up to ``until``, oldest first."""
    count = max(1, round(window / step))
    since = until - step * count
    params = {"since": since, "until": until, "step": step.total_seconds(), "count": count}
    rows = await connection.execute(ACTIVITY, params)
    return [
        ActivityBucket(
            start=since + step * row.n,
            finished=int(row.finished),
            failed=int(row.failed),
            pickup_p50=None if row.p50 is None else max(0.0, float(row.p50)),
            pickup_p95=None if row.p95 is None else max(0.0, float(row.p95)),
        )
        for row in rows
    ]
