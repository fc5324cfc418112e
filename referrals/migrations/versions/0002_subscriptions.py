"""Subscriptions adapter: hook registrations with their health, processed EHR resource versions.

Revision ID: 0002_subscriptions
Revises: 0001_core

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_subscriptions"
down_revision = "0001_core"
branch_labels = None
depends_on = None

#: aware timestamps: TIMESTAMP WITH TIME ZONE on PostgreSQL, DATETIME on SQLite
MOMENT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "subscription_registrations",
        sa.Column("hook_id", sa.String(64), primary_key=True),
        sa.Column("server", sa.String(512), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("deliver_kind", sa.String(128), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("subscription_id", sa.String(128)),
        sa.Column("flavour", sa.String(32), nullable=False, server_default=""),
        sa.Column("criteria", sa.Text(), nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False, server_default="new"),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.Column("updated_at", MOMENT, nullable=False),
        sa.Column("last_notification_at", MOMENT),
        sa.Column("last_notification_type", sa.String(32)),
        sa.Column("last_event_number", sa.String(32)),
        sa.Column("notifications", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("errors", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text()),
    )
    op.create_index("ix_subscription_registrations_server", "subscription_registrations",
                    ["server", "purpose"])
    op.create_table(
        "subscription_processed",
        sa.Column("server", sa.String(512), primary_key=True),
        sa.Column("resource_type", sa.String(64), primary_key=True),
        sa.Column("resource_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(64), nullable=False, server_default=""),
        sa.Column("last_updated", sa.String(64), nullable=False, server_default=""),
        sa.Column("processed_at", MOMENT, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("subscription_processed")
    op.drop_table("subscription_registrations")  # with its index
