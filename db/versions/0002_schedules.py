"""Schedules: when a paused schedule was resumed, and indexes for the scheduling duties.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

``tasks.resumed_at`` lets the materialiser treat the fires that fell due while a schedule was
paused as misfires. ``ix_tasks_recurring`` serves the materialiser's pass (every second, over
cron and interval tasks only, not the whole task history); ``ix_tasks_start_bound`` the sweep
of schedule-to-start deadlines (only tasks that have one).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the column and the two partial indexes."""
    op.add_column("tasks", sa.Column("resumed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        op.f("ix_tasks_recurring"),
        "tasks",
        ["created_at", "id"],
        postgresql_where=sa.text("schedule_kind IN ('cron', 'interval')"),
    )
    op.create_index(
        op.f("ix_tasks_start_bound"),
        "tasks",
        ["id"],
        postgresql_where=sa.text("schedule_to_start_timeout IS NOT NULL"),
    )


def downgrade() -> None:
    """Drop them again."""
    op.drop_index(op.f("ix_tasks_start_bound"), table_name="tasks")
    op.drop_index(op.f("ix_tasks_recurring"), table_name="tasks")
    op.drop_column("tasks", "resumed_at")
