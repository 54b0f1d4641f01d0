"""The SQL of ``taskmesh bench``: reading its runs' timings, and the physical-limit probe.

Benchmark runs carry a label ``bench=<tag>``; every figure is read back from the ledger's own
timestamps, so what is measured is what was recorded. The probe is the same PostgreSQL doing
the least work a scheduler must do per run: claim a batch of rows with ``SKIP LOCKED`` (one
commit), then mark them finished (a second commit), in a table of its own that it drops after.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from taskmesh.common.ledger.engine import create_engine, translated_errors

LABEL = "bench"
PROBE_TABLE = "taskmesh_bench_probe"

SETTINGS = text("""
    SELECT name, setting FROM pg_settings
    WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers',
                   'server_version')
""")

# Runs of one tag by state.
STATE_COUNTS = text("""
    SELECT r.state, count(*) AS runs
    FROM runs AS r JOIN tasks AS t ON t.id = r.task_id
    WHERE t.labels @> jsonb_build_object(CAST(:label AS text), CAST(:tag AS text))
    GROUP BY r.state
""")

# Per run of one tag: seconds from due to started, the span of the whole tag, and whether
# the run was stored after it was due.
TIMINGS = text("""
    SELECT EXTRACT(EPOCH FROM r.started_at - r.due_at) AS pickup,
           EXTRACT(EPOCH FROM r.due_at) AS due,
           EXTRACT(EPOCH FROM r.finished_at) AS finished,
           r.created_at > r.due_at AS late
    FROM runs AS r JOIN tasks AS t ON t.id = r.task_id
    WHERE t.labels @> jsonb_build_object(CAST(:label AS text), CAST(:tag AS text))
      AND r.state = 'succeeded'
""")

# Where the time of one tag's runs went, stage by stage (seconds; p50 and max of each), and
# the moment each stage's last run passed, relative to the first due time.
STAGES = text("""
    WITH r AS (
        SELECT r.* FROM runs AS r JOIN tasks AS t ON t.id = r.task_id
        WHERE t.labels @> jsonb_build_object(CAST(:label AS text), CAST(:tag AS text))
          AND r.state = 'succeeded'
    ), spans AS (
        SELECT EXTRACT(EPOCH FROM delegated_at - due_at) AS due_to_delegated,
               EXTRACT(EPOCH FROM assigned_at - delegated_at) AS delegated_to_assigned,
               EXTRACT(EPOCH FROM started_at - assigned_at) AS assigned_to_started,
               EXTRACT(EPOCH FROM finished_at - started_at) AS started_to_finished,
               EXTRACT(EPOCH FROM delegated_at - (SELECT min(due_at) FROM r)) AS delegated,
               EXTRACT(EPOCH FROM finished_at - (SELECT min(due_at) FROM r)) AS finished,
               EXTRACT(EPOCH FROM due_at - (SELECT min(due_at) FROM r)) AS due
        FROM r
    )
    SELECT stage, percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS p50,
           max(seconds) AS max
    FROM spans CROSS JOIN LATERAL (VALUES
        ('due_to_delegated', due_to_delegated), ('delegated_to_assigned', delegated_to_assigned),
        ('assigned_to_started', assigned_to_started),
        ('started_to_finished', started_to_finished), ('last_due', due),
        ('last_delegated', delegated), ('last_finished', finished)
    ) AS s(stage, seconds)
    GROUP BY stage
""")

PROBE_CREATE = text(f"""
    CREATE TABLE {PROBE_TABLE} (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        state text NOT NULL DEFAULT 'pending',
        payload text NOT NULL,
        claimed_at timestamptz,
        finished_at timestamptz
    )
""")
PROBE_INDEX = text(f"CREATE INDEX ON {PROBE_TABLE} (id) WHERE state = 'pending'")
PROBE_DROP = text(f"DROP TABLE IF EXISTS {PROBE_TABLE}")
PROBE_FILL = text(f"""
    INSERT INTO {PROBE_TABLE} (payload)
    SELECT 'noop' FROM generate_series(1, :rows)
""")
PROBE_CLAIM = text(f"""
    WITH picked AS (
        SELECT id FROM {PROBE_TABLE} WHERE state = 'pending'
        ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED
    )
    UPDATE {PROBE_TABLE} AS p SET state = 'running', claimed_at = clock_timestamp()
    FROM picked WHERE p.id = picked.id
    RETURNING p.id
""")
PROBE_COMPLETE = text(f"""
    UPDATE {PROBE_TABLE} SET state = 'succeeded', finished_at = clock_timestamp()
    WHERE id = ANY(CAST(:ids AS bigint[]))
""")


@dataclass(frozen=True, slots=True)
class RunTimings:
    """The succeeded runs of one tag: pickup latencies (seconds) and the span they covered."""

    pickups: tuple[float, ...]
    first_due: float | None  # epoch seconds
    last_finished: float | None  # epoch seconds
    late: int = 0  # runs stored after their due time


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe pass: rows claimed and completed, at one batch size, in some seconds."""

    batch: int
    rows: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        """Rows claimed and completed per second."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0


class BenchmarkLedger:
    """The benchmark's own small pool to the ledger it measures."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Use ``engine``; see ``connect``."""
        self._engine = engine

    @classmethod
    def connect(cls, url: str) -> BenchmarkLedger:
        """A pool of two connections to the ledger at ``url``."""
        return cls(create_engine(url, pool_size=2, application_name="taskmesh-bench"))

    async def close(self) -> None:
        """Close the pool."""
        await self._engine.dispose()

    async def settings(self) -> dict[str, str]:
        """The server settings that decide durability and speed."""
        with translated_errors():
            async with self._engine.connect() as connection:
                rows = await connection.execute(SETTINGS)
                return {str(row.name): str(row.setting) for row in rows}

    async def state_counts(self, tag: str) -> dict[str, int]:
        """How many runs of ``tag`` are in each state."""
        with translated_errors():
            async with self._engine.connect() as connection:
                rows = await connection.execute(STATE_COUNTS, {"label": LABEL, "tag": tag})
                return {str(row.state): int(row.runs) for row in rows}

    async def timings(self, tag: str) -> RunTimings:
        """Pickup latencies and the due-to-finished span of the succeeded runs of ``tag``."""
        with translated_errors():
            async with self._engine.connect() as connection:
                rows = (await connection.execute(TIMINGS, {"label": LABEL, "tag": tag})).all()
        pickups = tuple(sorted(float(row.pickup) for row in rows))
        first_due = min((float(row.due) for row in rows), default=None)
        last_finished = max((float(row.finished) for row in rows), default=None)
        late = sum(1 for row in rows if row.late)
        return RunTimings(pickups, first_due, last_finished, late)

    async def stages(self, tag: str) -> dict[str, dict[str, float]]:
        """Seconds spent in each stage by the succeeded runs of ``tag`` (p50 and max)."""
        with translated_errors():
            async with self._engine.connect() as connection:
                rows = await connection.execute(STAGES, {"label": LABEL, "tag": tag})
                return {
                    str(row.stage): {
                        "p50": round(float(row.p50), 4),
                        "max": round(float(row.max), 4),
                    }
                    for row in rows
                }

    async def probe(self, batch: int, rows: int) -> ProbeResult:
        """Fill a fresh probe table with ``rows``, then claim and complete them ``batch`` at once.

        Each claim and each completion is its own transaction, committed with the server's
        durability settings, as a scheduler's would be.
        """
        with translated_errors():
            await self._prepare_probe(rows)
            try:
                seconds = await self._drain_probe(batch)
            finally:
                async with self._engine.begin() as connection:
                    await connection.execute(PROBE_DROP)
        return ProbeResult(batch, rows, seconds)

    async def _prepare_probe(self, rows: int) -> None:
        """A fresh probe table holding ``rows`` pending rows, analysed."""
        async with self._engine.begin() as connection:
            for statement in (PROBE_DROP, PROBE_CREATE, PROBE_INDEX):
                await connection.execute(statement)
            await connection.execute(PROBE_FILL, {"rows": rows})
        async with self._engine.connect() as connection:
            await connection.execute(text(f"ANALYZE {PROBE_TABLE}"))
            await connection.commit()

    async def _drain_probe(self, batch: int) -> float:
        """Claim-then-complete until nothing is pending; the seconds it took."""
        started = time.perf_counter()
        async with self._engine.connect() as connection:
            while True:
                claimed: Sequence[int] = (
                    (await connection.execute(PROBE_CLAIM, {"batch": batch})).scalars().all()
                )
                await connection.commit()
                if not claimed:
                    break
                await connection.execute(PROBE_COMPLETE, {"ids": list(claimed)})
                await connection.commit()
        return time.perf_counter() - started
