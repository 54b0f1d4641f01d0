"""The dispatcher's timer: a partial index of pending runs by ready time.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23

The dispatcher sleeps until the next pending run becomes ready (its due time, or the end of a
retry backoff or a parking) instead of polling; finding that run must cost one index probe
whatever the backlog, and the index holds only pending runs, not the finished history.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """``ix_runs_ready``: pending runs by ``ready_at``."""
    op.create_index(
        "ix_runs_ready", "runs", ["ready_at"], postgresql_where=sa.text("state = 'pending'")
    )


def downgrade() -> None:
    """Back to 0006."""
    op.drop_index("ix_runs_ready", table_name="runs")
