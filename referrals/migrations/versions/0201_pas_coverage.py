"""PAS adapter: per referral, whether it needs prior authorization and which source said so
(the payer's CRD service, its eligibility answer, or the coverage-requirements table), and the
payer's eligibility answer.

Revision ID: 0201_pas_coverage
Revises: 0200_pas_replies

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0201_pas_coverage"
down_revision = "0200_pas_replies"
branch_labels = None
depends_on = None

INSTANT = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "pas_coverage",
        sa.Column("referral_id", sa.String(64), primary_key=True),
        sa.Column("payer", sa.String(200), nullable=False),
        sa.Column("requirement", sa.String(16), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("detail", JSON, nullable=False),
        sa.Column("eligibility", JSON, nullable=True),
        sa.Column("checked_at", INSTANT, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pas_coverage")
