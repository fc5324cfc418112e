"""Authorization server: registered API clients, issued tokens (hashes), used assertion ids.

Revision ID: 0100_access
Revises: 0001_core

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0100_access"
down_revision = "0001_core"
branch_labels = None
depends_on = None

MOMENT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "access_clients",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("jwks_url", sa.String(1024)),
        sa.Column("jwks", sa.JSON()),
        sa.Column("tenant", sa.String(128)),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.Column("removed_at", MOMENT),
    )
    op.create_index("ix_access_clients_name", "access_clients", ["name"])
    op.create_table(
        "access_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("issued_at", MOMENT, nullable=False),
        sa.Column("expires_at", MOMENT, nullable=False),
    )
    op.create_index("ix_access_tokens_expires", "access_tokens", ["expires_at"])
    op.create_index("ix_access_tokens_client", "access_tokens", ["client_id"])
    op.create_table(
        "access_assertions",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("jti_hash", sa.String(64), primary_key=True),
        sa.Column("expires_at", MOMENT, nullable=False),
    )
    op.create_index("ix_access_assertions_expires", "access_assertions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("access_assertions")
    op.drop_table("access_tokens")
    op.drop_table("access_clients")
