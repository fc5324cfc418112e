"""HL7 v2 bridge tables: referral business keys, patient identifiers, parked messages, outbound log.

Revision ID: 0003_hl7
Revises: 0001_core
"""

from __future__ import annotations

from alembic import op

from hl7_bridge.tables import TABLES

revision = "0003_hl7"
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
