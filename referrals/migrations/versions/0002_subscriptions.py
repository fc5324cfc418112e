"""Subscriptions adapter: hook registrations with their health, processed EHR resource versions.

Revision ID: 0002_subscriptions
Revises: 0001_core
"""

from __future__ import annotations

from alembic import op

from subscriptions.tables import TABLES

revision = "0002_subscriptions"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    for table in TABLES:
        table.create(bind)


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(TABLES):
        table.drop(bind)
