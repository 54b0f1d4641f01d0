"""Run events remember the transaction that wrote them, so a live tail can follow commit order.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Event ids come from a sequence, handed out when a row is inserted, not when its transaction
commits: a reader that only remembers "the last id I sent" can step past an id whose
transaction commits a moment later and never see it. ``txid`` (the writer's 64-bit transaction
id) lets the reader take only events of transactions older than every transaction still running
(``pg_snapshot_xmin``), a set that can no longer grow, in (txid, id) order.

Watching a workflow's events looks its tasks up by ``workflow_id``, hence that index too.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT_TXID = "(pg_current_xact_id())::text::bigint"


def upgrade() -> None:
    """Add ``run_events.txid`` (existing rows get this migration's, all committed) and the indexes."""
    op.add_column(
        "run_events",
        sa.Column("txid", sa.BigInteger(), nullable=False, server_default=sa.text(CURRENT_TXID)),
    )
    op.create_index("ix_run_events_txid_id", "run_events", ["txid", "id"])
    op.create_index("ix_tasks_workflow_id", "tasks", ["workflow_id"])


def downgrade() -> None:
    """Drop the indexes and the column."""
    op.drop_index("ix_tasks_workflow_id", table_name="tasks")
    op.drop_index("ix_run_events_txid_id", table_name="run_events")
    op.drop_column("run_events", "txid")
