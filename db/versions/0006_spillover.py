"""Spillover: placement defaults to strict, and runs remember the region they spilled from.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23

A task's runs stay in its region unless it asks for ``prefer``. An attempt delegated to a
fallback region keeps its task's region in ``spilled_from``; a partial index over those
attempts lets the cluster view count recent spillover without reading the run history.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Default placement strict; ``runs.spilled_from`` and its partial index."""
    op.alter_column("tasks", "placement", server_default=sa.text("'strict'::text"))
    op.add_column("runs", sa.Column("spilled_from", sa.Text(), nullable=True))
    op.create_index(
        "ix_runs_spilled",
        "runs",
        ["delegated_at"],
        postgresql_where=sa.text("spilled_from IS NOT NULL"),
    )


def downgrade() -> None:
    """Back to 0004."""
    op.drop_index("ix_runs_spilled", table_name="runs")
    op.drop_column("runs", "spilled_from")
    op.alter_column("tasks", "placement", server_default=sa.text("'prefer'::text"))
