"""Outreach adapter: ladder plans, the message outbox (also replies), every send/skip decision,
consent events (opt-outs, opt-ins) and contact points the provider refused.

Revision ID: 0510_outreach
Revises: 0001_core

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0510_outreach"
down_revision = "0001_core"
branch_labels = None
depends_on = None

#: aware timestamps: TIMESTAMP WITH TIME ZONE on PostgreSQL, DATETIME on SQLite
INSTANT = sa.DateTime(timezone=True)
#: JSONB on PostgreSQL, JSON elsewhere
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
#: BIGSERIAL on PostgreSQL; INTEGER PRIMARY KEY (the rowid) on SQLite
SERIAL_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

#: tables in creation order (dropped in reverse)
TABLES = ["outreach_plans", "outreach_messages", "outreach_decisions", "outreach_consents",
          "outreach_failing"]


def upgrade() -> None:
    op.create_table(
        "outreach_plans",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(512), nullable=False, unique=True),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("patient", sa.String(256), nullable=False),
        sa.Column("ladder", sa.String(64), nullable=False),
        sa.Column("ladder_version", sa.Integer(), nullable=False),
        sa.Column("rungs", JSON, nullable=False),
        sa.Column("zone", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stop_reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("done", JSON, nullable=False),
        sa.Column("started_at", INSTANT, nullable=False),
        sa.Column("updated_at", INSTANT, nullable=False),
    )
    op.create_index("ix_outreach_plans_referral_id", "outreach_plans", ["referral_id"])
    op.create_table(
        "outreach_messages",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(512), nullable=False, unique=True),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("patient", sa.String(256), nullable=False),
        sa.Column("plan_id", sa.String(64)),
        sa.Column("rung", sa.Integer()),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("address", sa.String(320), nullable=False, server_default=""),
        sa.Column("language", sa.String(16), nullable=False, server_default=""),
        sa.Column("subject", sa.Text(), nullable=False, server_default=""),
        sa.Column("body", sa.Text(), nullable=False, server_default=""),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("provider_sid", sa.String(255)),
        sa.Column("error_code", sa.String(16), nullable=False, server_default=""),
        sa.Column("rule", sa.String(32), nullable=False, server_default=""),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("reply_context", sa.Text(), nullable=False, server_default=""),
        sa.Column("in_response_to", sa.String(64)),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("sent_at", INSTANT),
        sa.Column("updated_at", INSTANT, nullable=False),
    )
    op.create_index("ix_outreach_messages_referral_id", "outreach_messages", ["referral_id"])
    op.create_index("ix_outreach_messages_provider_sid", "outreach_messages", ["provider_sid"])
    op.create_index("ix_outreach_messages_address", "outreach_messages",
                    ["address", "created_at"])
    op.create_index("ix_outreach_messages_patient", "outreach_messages",
                    ["patient", "created_at"])
    op.create_table(
        "outreach_decisions",
        sa.Column("id", SERIAL_ID, primary_key=True, autoincrement=True),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("message_key", sa.String(512), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False, server_default=""),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("not_before", INSTANT),
        sa.Column("at", INSTANT, nullable=False),
    )
    op.create_index("ix_outreach_decisions_referral_id", "outreach_decisions", ["referral_id"])
    op.create_table(
        "outreach_consents",
        sa.Column("id", SERIAL_ID, primary_key=True, autoincrement=True),
        sa.Column("patient", sa.String(256), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("address", sa.String(320), nullable=False, server_default=""),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("text", sa.String(200), nullable=False, server_default=""),
        sa.Column("at", INSTANT, nullable=False),
    )
    op.create_index("ix_outreach_consents_patient", "outreach_consents", ["patient"])
    op.create_index("ix_outreach_consents_address", "outreach_consents", ["address"])
    op.create_table(
        "outreach_failing",
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("channel", sa.String(16), primary_key=True),
        sa.Column("code", sa.String(16), nullable=False, server_default=""),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("since", INSTANT, nullable=False),
    )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)  # with its indexes
