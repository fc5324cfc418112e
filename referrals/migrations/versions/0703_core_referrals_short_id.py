"""Core: referrals found by their short id (the last 8 characters of the id, which listings
show) use an index instead of reading the table.

Revision ID: 0703_core_referrals_short_id
Revises: 0702_core_resources_by_type_id

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0703_core_referrals_short_id"
down_revision = "0702_core_resources_by_type_id"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_referrals_short_id", "referrals", [sa.text("substr(id, 29)")])


def downgrade() -> None:
    op.drop_index("ix_referrals_short_id", "referrals")
