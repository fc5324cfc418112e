"""PAS adapter: prior-authorization requests (exact bundle bytes sent, decision per item, auth
number, related prior), their responses, the organisation-level Subscription per payer.

Revision ID: 0004_pas
Revises: 0001_core
"""

from __future__ import annotations

from alembic import op

from pas_client.tables import TABLES

revision = "0004_pas"
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
