"""Indexes for exact run totals by state and for recent activity (the dashboard, metrics).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

``ix_runs_state`` serves ``count_runs_by_state`` (a GROUP BY answered from the index);
``ix_runs_started_at`` and ``ix_runs_finished_at`` serve ``run_activity`` (the last minutes of
pickup latency and throughput). The time indexes are partial: unstarted / unfinished attempts
have nothing to index.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the three indexes."""
    op.create_index("ix_runs_state", "runs", ["state"])
    op.create_index(
        "ix_runs_started_at",
        "runs",
        ["started_at"],
        postgresql_where=sa.text("started_at IS NOT NULL"),
    )
    op.create_index(
        "ix_runs_finished_at",
        "runs",
        ["finished_at"],
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_runs_finished_at", table_name="runs")
    op.drop_index("ix_runs_started_at", table_name="runs")
    op.drop_index("ix_runs_state", table_name="runs")
