"""Count runs by state and region from an index: ``ix_runs_state_region``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

The master's ``/metrics`` (and the dashboard) ask for exact counts of runs per state and
region on every scrape; with this index PostgreSQL answers with an index-only scan instead of
reading the whole ``runs`` table, history included.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the index."""
    op.create_index(op.f("ix_runs_state_region"), "runs", ["state", "region"])


def downgrade() -> None:
    """Drop the index."""
    op.drop_index(op.f("ix_runs_state_region"), table_name="runs")
