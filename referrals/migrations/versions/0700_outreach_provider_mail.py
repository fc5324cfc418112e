"""Outreach: mail to providers' offices (the outreach.provider-email work kind), one row per
send, written before the SMTP call.

Revision ID: 0700_outreach_provider_mail
Revises: 0510_outreach

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0700_outreach_provider_mail"
down_revision = "0510_outreach"
branch_labels = None
depends_on = None

#: aware timestamps: TIMESTAMP WITH TIME ZONE on PostgreSQL, DATETIME on SQLite
INSTANT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "outreach_provider_mail",
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("referral_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False, server_default=""),
        sa.Column("error", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("updated_at", INSTANT, nullable=False),
    )
    op.create_index("ix_outreach_provider_mail_referral", "outreach_provider_mail",
                    ["referral_id"])


def downgrade() -> None:
    op.drop_index("ix_outreach_provider_mail_referral", "outreach_provider_mail")
    op.drop_table("outreach_provider_mail")
