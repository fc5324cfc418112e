"""The core store: referrals, event log, resources with history, inbox, work items, quarantine.

Revision ID: 0001_core
Revises:

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None

#: aware UTC timestamps: TIMESTAMP WITH TIME ZONE on PostgreSQL, DATETIME on SQLite
MOMENT = sa.DateTime(timezone=True)
#: JSONB on PostgreSQL, JSON elsewhere
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
#: BIGSERIAL on PostgreSQL; INTEGER PRIMARY KEY (the rowid) on SQLite
SERIAL_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

#: tables in creation order (dropped in reverse)
TABLES = ["referrals", "referral_events", "resources", "resource_versions", "inbox", "work_items",
          "quarantine", "cursors"]

#: (name, table, columns)
INDEXES = [
    ("ix_referrals_business_status", "referrals", ["business_status"]),
    ("ix_referrals_deadline", "referrals", ["deadline"]),
    ("ix_referrals_owner", "referrals", ["owner"]),
    ("ix_referrals_patient", "referrals", ["patient"]),
    ("ix_referrals_service_request", "referrals", ["service_request"]),
    ("ix_referrals_stage_updated", "referrals", ["stage", "updated_at"]),
    ("ix_referrals_task_status", "referrals", ["task_status"]),
    ("ix_referrals_updated", "referrals", ["updated_at", "id"]),
    ("ix_inbox_status", "inbox", ["status", "id"]),
    ("ix_work_items_due", "work_items", ["status", "run_at"]),
]

SQLITE_GUARDS = [
    """CREATE TRIGGER referral_events_no_update BEFORE UPDATE ON referral_events
       BEGIN SELECT RAISE(ABORT, 'referral_events is append-only'); END""",
    """CREATE TRIGGER referral_events_no_delete BEFORE DELETE ON referral_events
       BEGIN SELECT RAISE(ABORT, 'referral_events is append-only'); END""",
]

POSTGRES_GUARDS = [
    """CREATE FUNCTION refloop_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$""",
    """CREATE TRIGGER referral_events_append_only BEFORE UPDATE OR DELETE ON referral_events
       FOR EACH ROW EXECUTE FUNCTION refloop_append_only()""",
]


def upgrade() -> None:
    create_referrals()
    create_referral_events()
    create_resources()
    create_resource_versions()
    create_inbox()
    create_work_items()
    create_quarantine()
    create_cursors()
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)
    guards = SQLITE_GUARDS if op.get_bind().dialect.name == "sqlite" else POSTGRES_GUARDS
    for statement in guards:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS referral_events_append_only ON referral_events")
        op.execute("DROP FUNCTION IF EXISTS refloop_append_only()")
    for table in reversed(TABLES):
        op.drop_table(table)  # with its indexes (and, on SQLite, its triggers)


def create_referrals() -> None:
    op.create_table(
        "referrals",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("source_key", sa.String(512), nullable=False, unique=True),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("task_status", sa.String(32), nullable=False),
        sa.Column("business_status", sa.String(16)),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("patient", sa.String(256), nullable=False),
        sa.Column("owner", sa.String(256), nullable=False, server_default=""),
        sa.Column("service_request", sa.String(512), nullable=False),
        sa.Column("specialty", sa.String(128), nullable=False, server_default=""),
        sa.Column("payer", sa.String(256), nullable=False, server_default=""),
        sa.Column("auth_state", sa.String(32), nullable=False, server_default=""),
        sa.Column("deadline", MOMENT),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.Column("updated_at", MOMENT, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", JSON, nullable=False),
        sa.Column("task", JSON, nullable=False),
    )


def create_referral_events() -> None:
    op.create_table(
        "referral_events",
        sa.Column("id", SERIAL_ID, primary_key=True, autoincrement=True),
        sa.Column("referral_id", sa.String(64), sa.ForeignKey("referrals.id"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("from_stage", sa.String(32)),
        sa.Column("to_stage", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("actor_display", sa.String(256), nullable=False, server_default=""),
        sa.Column("at", MOMENT, nullable=False),
        sa.Column("reason_code", sa.String(128)),
        sa.Column("reason_text", sa.Text()),
        sa.Column("source", sa.String(256), nullable=False, server_default=""),
        sa.Column("source_message", sa.String(256), nullable=False, server_default=""),
        sa.Column("data", JSON, nullable=False),
        sa.Column("provenance", JSON, nullable=False),
        sa.UniqueConstraint("referral_id", "seq", name="uq_referral_events_seq"),
    )


def create_resources() -> None:
    op.create_table(
        "resources",
        sa.Column("server", sa.String(512), primary_key=True),
        sa.Column("resource_type", sa.String(64), primary_key=True),
        sa.Column("resource_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("remote_version", sa.String(64)),
        sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("updated_at", MOMENT, nullable=False),
        sa.Column("body", JSON),
    )


def create_resource_versions() -> None:
    op.create_table(
        "resource_versions",
        sa.Column("server", sa.String(512), primary_key=True),
        sa.Column("resource_type", sa.String(64), primary_key=True),
        sa.Column("resource_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("remote_version", sa.String(64)),
        sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("recorded_at", MOMENT, nullable=False),
        sa.Column("body", JSON),
    )


def create_inbox() -> None:
    op.create_table(
        "inbox",
        sa.Column("id", SERIAL_ID, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("sender", sa.String(256), nullable=False),
        sa.Column("dedupe_key", sa.String(512), unique=True),
        sa.Column("received_at", MOMENT, nullable=False),
        sa.Column("content_type", sa.String(128), nullable=False, server_default=""),
        sa.Column("headers", JSON, nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("processed_at", MOMENT),
        sa.Column("note", sa.Text(), nullable=False, server_default=""),
    )


def create_work_items() -> None:
    op.create_table(
        "work_items",
        sa.Column("id", SERIAL_ID, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(512), nullable=False, unique=True),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_at", MOMENT, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="8"),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_expires", MOMENT),
        sa.Column("last_error", sa.Text()),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.Column("done_at", MOMENT),
    )


def create_quarantine() -> None:
    op.create_table(
        "quarantine",
        sa.Column("id", SERIAL_ID, primary_key=True, autoincrement=True),
        sa.Column("origin", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("content_type", sa.String(128), nullable=False, server_default=""),
        sa.Column("original", sa.LargeBinary(), nullable=False),
        sa.Column("inbox_id", sa.BigInteger()),
        sa.Column("work_item_id", sa.BigInteger()),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.Column("resolved_at", MOMENT),
    )


def create_cursors() -> None:
    op.create_table(
        "cursors",
        sa.Column("name", sa.String(512), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", MOMENT, nullable=False),
    )
