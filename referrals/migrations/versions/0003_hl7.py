"""HL7 v2 bridge tables: referral business keys, patient identifiers, parked messages, outbound log.

Revision ID: 0003_hl7
Revises: 0001_core

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_hl7"
down_revision = "0001_core"
branch_labels = None
depends_on = None

#: aware timestamps: TIMESTAMP WITH TIME ZONE on PostgreSQL, DATETIME on SQLite
MOMENT = sa.DateTime(timezone=True)
#: BIGSERIAL on PostgreSQL; INTEGER PRIMARY KEY (the rowid) on SQLite
SERIAL_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

#: tables in creation order (dropped in reverse)
TABLES = ["hl7_referral_keys", "hl7_patient_ids", "hl7_parked", "hl7_outbound_log"]


def upgrade() -> None:
    op.create_table(
        "hl7_referral_keys",
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("sender", sa.String(256), nullable=False),
        sa.Column("patient", sa.String(256), nullable=False, server_default=""),
    )
    op.create_index("ix_hl7_referral_keys_referral_id", "hl7_referral_keys", ["referral_id"])
    op.create_table(
        "hl7_patient_ids",
        sa.Column("system", sa.String(512), primary_key=True),
        sa.Column("value", sa.String(256), primary_key=True),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("server", sa.String(256), nullable=False),
    )
    op.create_index("ix_hl7_patient_ids_patient_id", "hl7_patient_ids", ["patient_id"])
    op.create_table(
        "hl7_parked",
        sa.Column("id", SERIAL_ID, primary_key=True, autoincrement=True),
        sa.Column("inbox_id", sa.BigInteger(), nullable=False),
        sa.Column("waiting_for", sa.String(512), nullable=False),
        sa.Column("parked_at", MOMENT, nullable=False),
        sa.UniqueConstraint("inbox_id", "waiting_for", name="uq_hl7_parked_inbox_key"),
    )
    op.create_index("ix_hl7_parked_waiting_for", "hl7_parked", ["waiting_for"])
    op.create_table(
        "hl7_outbound_log",
        sa.Column("id", SERIAL_ID, primary_key=True, autoincrement=True),
        sa.Column("work_key", sa.String(512), nullable=False, unique=True),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("sender", sa.String(256), nullable=False),
        sa.Column("message_type", sa.String(32), nullable=False),
        sa.Column("control_id", sa.String(64), nullable=False),
        sa.Column("ack_code", sa.String(4), nullable=False),
        sa.Column("sent_at", MOMENT, nullable=False),
    )
    op.create_index("ix_hl7_outbound_log_referral_id", "hl7_outbound_log", ["referral_id"])


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)  # with its indexes
