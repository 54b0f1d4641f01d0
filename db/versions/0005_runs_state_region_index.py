"""Count runs by state and region from an index: ``ix_runs_state_region`` replaces ``ix_runs_state``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

The master's ``/metrics`` (and the dashboard) ask for exact counts of runs per state and
region on every scrape; with this index PostgreSQL answers with an index-only scan instead of
reading the whole ``runs`` table, history included. Its leading column serves the counts by
state alone just as well, so the single-column ``ix_runs_state`` of 0004 goes.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the (state, region) index, then drop the one it supersedes."""
    op.create_index(op.f("ix_runs_state_region"), "runs", ["state", "region"])
    op.drop_index("ix_runs_state", table_name="runs")


def downgrade() -> None:
    """Bring back ``ix_runs_state``, then drop the (state, region) index."""
    op.create_index("ix_runs_state", "runs", ["state"])
    op.drop_index(op.f("ix_runs_state_region"), table_name="runs")
