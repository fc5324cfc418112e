"""Analytics cube cells for pairs of dimensions (a month's referrals of one specialty and one
priority, say): `dim` and `value` of the cube and the drop-off counts widen to hold a pair.

The rollups are emptied and their cursor removed, so the rollup re-reads the event log from the
start and the new cells fill in (`refloop analytics rebuild` does it faster). They hold nothing
that the event log does not.

Revision ID: 0751_analytics_pairs
Revises: 0750_analytics

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0751_analytics_pairs"
down_revision = "0750_analytics"
branch_labels = None
depends_on = None

TABLES = ("analytics_cube", "analytics_dropoff")


def upgrade() -> None:
    _empty()
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.alter_column("dim", type_=sa.String(40), existing_type=sa.String(16),
                               existing_nullable=False)
            batch.alter_column("value", type_=sa.String(1100), existing_type=sa.String(256),
                               existing_nullable=False)


def downgrade() -> None:
    _empty()
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.alter_column("dim", type_=sa.String(16), existing_type=sa.String(40),
                               existing_nullable=False)
            batch.alter_column("value", type_=sa.String(256), existing_type=sa.String(1100),
                               existing_nullable=False)


def _empty() -> None:
    for table in ("analytics_facts", *TABLES):
        op.execute(sa.text(f"DELETE FROM {table}"))
    op.execute(sa.text("DELETE FROM cursors WHERE name = 'analytics.rollup'"))
