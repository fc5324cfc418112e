"""PAS adapter: every payer reply kept raw (status, headers, bytes) before it is interpreted, and
the follow-up of undecided requests (decision deadline, next $inquire, checks, escalation).

Revision ID: 0200_pas_replies
Revises: 0004_pas

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0200_pas_replies"
down_revision = "0004_pas"
branch_labels = None
depends_on = None

INSTANT = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
FOLLOW_UP = ("deadline_at", "next_check_at", "checks", "escalated_at")


def upgrade() -> None:
    with op.batch_alter_table("pas_requests") as batch:
        batch.add_column(sa.Column("deadline_at", INSTANT, nullable=True))
        batch.add_column(sa.Column("next_check_at", INSTANT, nullable=True))
        batch.add_column(sa.Column("checks", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("escalated_at", INSTANT, nullable=True))
    op.create_index("ix_pas_requests_next_check_at", "pas_requests", ["next_check_at"])
    op.create_table(
        "pas_replies",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("referral_id", sa.String(64), nullable=True),
        sa.Column("payer", sa.String(200), nullable=False),
        sa.Column("operation", sa.String(24), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=False),
        sa.Column("headers", JSON, nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", INSTANT, nullable=False),
        sa.Column("interpretation", sa.String(24), nullable=False, server_default=""),
        sa.Column("note", sa.Text(), nullable=False, server_default=""),
    )
    op.create_index("ix_pas_replies_request_id", "pas_replies", ["request_id"])
    op.create_index("ix_pas_replies_referral_id", "pas_replies", ["referral_id"])


def downgrade() -> None:
    op.drop_table("pas_replies")
    op.drop_index("ix_pas_requests_next_check_at", "pas_requests")
    with op.batch_alter_table("pas_requests") as batch:
        for column in reversed(FOLLOW_UP):
            batch.drop_column(column)
