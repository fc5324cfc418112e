"""Core: coordinator tasks (a person must act on a referral: call the patient, rebook, chase a
note), each with its allowed outcomes and the work kind its outcome is handed to.

Revision ID: 0500_core_coordinator_tasks
Revises: 0001_core

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0500_core_coordinator_tasks"
down_revision = "0001_core"
branch_labels = None
depends_on = None

#: aware timestamps: TIMESTAMP WITH TIME ZONE on PostgreSQL, DATETIME on SQLite
INSTANT = sa.DateTime(timezone=True)
#: JSONB on PostgreSQL, JSON elsewhere
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "coordinator_tasks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(512), nullable=False, unique=True),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("due_at", INSTANT),
        sa.Column("outcomes", JSON, nullable=False),
        sa.Column("on_outcome", sa.String(64)),
        sa.Column("data", JSON, nullable=False),
        sa.Column("outcome", sa.String(64)),
        sa.Column("actor", sa.String(256), nullable=False, server_default=""),
        sa.Column("actor_display", sa.String(256), nullable=False, server_default=""),
        sa.Column("note", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("closed_at", INSTANT),
    )
    op.create_index("ix_coordinator_tasks_open", "coordinator_tasks", ["status", "due_at"])
    op.create_index("ix_coordinator_tasks_referral", "coordinator_tasks", ["referral_id"])


def downgrade() -> None:
    op.drop_table("coordinator_tasks")  # with its indexes
