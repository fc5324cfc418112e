"""SMART app: launch states, server-side sessions; indexes for the worklist's keyset pages.

Revision ID: 0005_smart
Revises: 0001_core

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_smart"
down_revision = "0001_core"
branch_labels = None
depends_on = None

#: aware timestamps: TIMESTAMP WITH TIME ZONE on PostgreSQL, DATETIME on SQLite
MOMENT = sa.DateTime(timezone=True)

#: (name, columns): each worklist filter has an index that ends in the sort key (deadline, id)
WORKLIST_INDEXES = [
    ("ix_referrals_wl_due", ["deadline", "id"]),
    ("ix_referrals_wl_created", ["created_at", "id"]),
    ("ix_referrals_wl_stage_due", ["stage", "deadline", "id"]),
    ("ix_referrals_wl_owner_due", ["owner", "deadline", "id"]),
    ("ix_referrals_wl_priority_due", ["priority", "deadline", "id"]),
    ("ix_referrals_wl_specialty_due", ["specialty", "deadline", "id"]),
    ("ix_referrals_wl_patient_due", ["patient", "deadline", "id"]),
]


def upgrade() -> None:
    op.create_table(
        "smart_launch_states",
        sa.Column("state_hash", sa.String(64), primary_key=True),
        sa.Column("browser_hash", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("iss", sa.String(512), nullable=False),
        sa.Column("launch", sa.Text()),
        sa.Column("secrets", sa.Text(), nullable=False),
        sa.Column("redirect_uri", sa.String(512), nullable=False),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.Column("used_at", MOMENT),
    )
    op.create_index("ix_smart_launch_states_created", "smart_launch_states", ["created_at"])
    op.create_table(
        "smart_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("browser_hash", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("iss", sa.String(512), nullable=False),
        sa.Column("user_ref", sa.String(256), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),  # JSON (not JSONB) on PostgreSQL too
        sa.Column("tokens", sa.Text(), nullable=False),
        sa.Column("token_expires_at", MOMENT),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.Column("last_seen", MOMENT, nullable=False),
        sa.Column("expires_at", MOMENT, nullable=False),
    )
    op.create_index("ix_smart_sessions_browser", "smart_sessions", ["browser_hash"])
    op.create_index("ix_smart_sessions_last_seen", "smart_sessions", ["last_seen"])
    for name, columns in WORKLIST_INDEXES:
        op.create_index(name, "referrals", columns)


def downgrade() -> None:
    for name, _columns in reversed(WORKLIST_INDEXES):
        op.drop_index(name, table_name="referrals")
    op.drop_table("smart_sessions")  # with its indexes
    op.drop_table("smart_launch_states")
