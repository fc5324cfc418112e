"""SMART launch states: the (hashed) source address each came from, for the per-source limit.

Revision ID: 0101_smart_launch_source
Revises: 0005_smart

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0101_smart_launch_source"
down_revision = "0005_smart"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("smart_launch_states") as table:
        table.add_column(sa.Column("source", sa.String(64), nullable=False, server_default=""))
    op.create_index("ix_smart_launch_states_source", "smart_launch_states",
                    ["source", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_smart_launch_states_source", table_name="smart_launch_states")
    with op.batch_alter_table("smart_launch_states") as table:
        table.drop_column("source")
