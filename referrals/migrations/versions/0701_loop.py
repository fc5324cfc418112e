"""Loop adapter: chases of consult notes, secure links (upload, note) with their throttling and
sessions, uploaded files, milestone updates for referrers, note deliveries and receipts.

Revision ID: 0701_loop
Revises: 0001_core

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0701_loop"
down_revision = "0001_core"
branch_labels = None
depends_on = None

#: aware timestamps: TIMESTAMP WITH TIME ZONE on PostgreSQL, DATETIME on SQLite
INSTANT = sa.DateTime(timezone=True)
#: BIGSERIAL on PostgreSQL; INTEGER PRIMARY KEY (the rowid) on SQLite
SERIAL_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

#: tables in creation order (dropped in reverse)
TABLES = ["loop_chases", "loop_links", "loop_link_failures", "loop_sessions", "loop_files",
          "loop_updates", "loop_deliveries"]


def upgrade() -> None:
    op.create_table(
        "loop_chases",
        sa.Column("referral_id", sa.String(64), primary_key=True),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("specialist", sa.String(128), nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("visit_at", INSTANT, nullable=False),
        sa.Column("steps_done", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_step", sa.String(16), nullable=False, server_default=""),
        sa.Column("task_server", sa.String(512), nullable=False, server_default=""),
        sa.Column("task_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("stopped_by", sa.String(64), nullable=False, server_default=""),
        sa.Column("started_at", INSTANT, nullable=False),
        sa.Column("updated_at", INSTANT, nullable=False),
    )
    op.create_index("ix_loop_chases_task", "loop_chases", ["task_server", "task_id"])
    op.create_table(
        "loop_links",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("document", sa.String(256), nullable=False, server_default=""),
        sa.Column("document_server", sa.String(512), nullable=False, server_default=""),
        sa.Column("recipient", sa.String(320), nullable=False, server_default=""),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("expires_at", INSTANT, nullable=False),
        sa.Column("used_at", INSTANT),
        sa.Column("revoked_at", INSTANT),
        sa.Column("failed_attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("locked_at", INSTANT),
    )
    op.create_index("ix_loop_links_referral_id", "loop_links", ["referral_id"])
    op.create_table(
        "loop_link_failures",
        sa.Column("id", SERIAL_ID, primary_key=True, autoincrement=True),
        sa.Column("source_hash", sa.String(64), nullable=False),
        sa.Column("at", INSTANT, nullable=False),
    )
    op.create_index("ix_loop_link_failures_source", "loop_link_failures",
                    ["source_hash", "at"])
    op.create_table(
        "loop_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("link_id", sa.String(32), nullable=False),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("expires_at", INSTANT, nullable=False),
    )
    op.create_table(
        "loop_files",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content_type", sa.String(128), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(256), nullable=False, server_default=""),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
    )
    op.create_index("ix_loop_files_referral_id", "loop_files", ["referral_id"])
    op.create_table(
        "loop_updates",
        sa.Column("id", SERIAL_ID, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(512), nullable=False, unique=True),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("referrer", sa.String(128), nullable=False),
        sa.Column("milestone", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("about_seq", sa.Integer(), nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("sent_at", INSTANT),
        sa.Column("digest", sa.String(256), nullable=False, server_default=""),
    )
    op.create_index("ix_loop_updates_referral_id", "loop_updates", ["referral_id"])
    op.create_index("ix_loop_updates_pending", "loop_updates",
                    ["channel", "referrer", "sent_at"])
    op.create_table(
        "loop_deliveries",
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("referrer", sa.String(128), nullable=False),
        sa.Column("document", sa.String(256), nullable=False),
        sa.Column("document_server", sa.String(512), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("remote", sa.String(512), nullable=False, server_default=""),
        sa.Column("receipt", sa.String(256), nullable=False, server_default=""),
        sa.Column("error", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("sent_at", INSTANT),
        sa.Column("received_at", INSTANT),
    )
    op.create_index("ix_loop_deliveries_referral_id", "loop_deliveries", ["referral_id"])


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
