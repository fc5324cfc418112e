"""PAS adapter: prior-authorization requests (exact bundle bytes sent, decision per item, auth
number, related prior), their responses, the organisation-level Subscription per payer.

Revision ID: 0004_pas
Revises: 0001_core

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_pas"
down_revision = "0001_core"
branch_labels = None
depends_on = None

#: aware timestamps: TIMESTAMP WITH TIME ZONE on PostgreSQL, DATETIME on SQLite
INSTANT = sa.DateTime(timezone=True)
#: JSONB on PostgreSQL, JSON elsewhere
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

#: tables in creation order (dropped in reverse)
TABLES = ["pas_requests", "pas_responses", "pas_subscriptions"]


def upgrade() -> None:
    op.create_table(
        "pas_requests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("payer", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("chain_id", sa.String(64), nullable=False),
        sa.Column("prior_id", sa.String(64), nullable=True),
        sa.Column("version_no", sa.Integer(), nullable=False),
        sa.Column("bundle_identifier", sa.String(200), nullable=False, unique=True),
        sa.Column("claim_identifier", sa.String(200), nullable=False),
        sa.Column("claim_full_url", sa.String(200), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("decision", JSON, nullable=True),
        sa.Column("auth_number", sa.String(100), nullable=False, server_default=""),
        sa.Column("decided_at", sa.String(40), nullable=False, server_default=""),
        sa.Column("bundle", sa.LargeBinary(), nullable=False),
        sa.Column("findings", JSON, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("updated_at", INSTANT, nullable=False),
    )
    for column in ("chain_id", "claim_full_url", "claim_identifier", "referral_id"):
        op.create_index(f"ix_pas_requests_{column}", "pas_requests", [column])
    op.create_table(
        "pas_responses",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), sa.ForeignKey("pas_requests.id"),
                  nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("overall", sa.String(24), nullable=False),
        sa.Column("body", JSON, nullable=False),
        sa.Column("received_at", INSTANT, nullable=False),
        sa.UniqueConstraint("request_id", "digest", name="uq_pas_responses_request_digest"),
    )
    op.create_index("ix_pas_responses_request_id", "pas_responses", ["request_id"])
    op.create_table(
        "pas_subscriptions",
        sa.Column("payer", sa.String(200), primary_key=True),
        sa.Column("subscription_id", sa.String(200), nullable=False),
        sa.Column("hook_id", sa.String(200), nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
    )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)  # with its indexes
