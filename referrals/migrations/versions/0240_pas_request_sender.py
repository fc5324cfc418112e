"""PAS adapter: which work item sends a request (its idempotency key), claimed before the HTTP
call so that two workers never both send the same Claim.

Revision ID: 0240_pas_request_sender
Revises: 0201_pas_coverage

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0240_pas_request_sender"
down_revision = "0201_pas_coverage"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pas_requests") as batch:
        batch.add_column(sa.Column("sender", sa.String(512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pas_requests") as batch:
        batch.drop_column("sender")
