"""HL7 v2 bridge: the effective v2 state of each mapped patient, referral, order and
appointment, so that an update changes only the fields it carries; referral keys indexed by
patient (an A40 merge finds the patient's referrals without a full scan).

Revision ID: 0351_hl7_entity_state
Revises: 0350_hl7_keys

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0351_hl7_entity_state"
down_revision = "0350_hl7_keys"
branch_labels = None
depends_on = None

#: aware timestamps: TIMESTAMP WITH TIME ZONE on PostgreSQL, DATETIME on SQLite
MOMENT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "hl7_entity_state",
        sa.Column("entity", sa.String(300), primary_key=True),
        sa.Column("segments", sa.Text(), nullable=False),
        sa.Column("updated_at", MOMENT, nullable=False),
    )
    op.create_index("ix_hl7_referral_keys_patient", "hl7_referral_keys", ["patient"])


def downgrade() -> None:
    op.drop_index("ix_hl7_referral_keys_patient", table_name="hl7_referral_keys")
    op.drop_table("hl7_entity_state")
