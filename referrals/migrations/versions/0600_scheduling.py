"""Scheduling: patient links, patient sessions, appointments, reminders, waitlist and offers,
slots read from SMART Scheduling Links publishers, requests to calendars we cannot book into.

Revision ID: 0600_scheduling
Revises: 0001_core

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0600_scheduling"
down_revision = "0001_core"
branch_labels = None
depends_on = None

#: aware timestamps: TIMESTAMP WITH TIME ZONE on PostgreSQL, DATETIME on SQLite
MOMENT = sa.DateTime(timezone=True)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "scheduling_links",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.Column("expires_at", MOMENT, nullable=False),
        sa.Column("revoked_at", MOMENT),
        sa.Column("failed_attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("locked_at", MOMENT),
        sa.Column("verified_at", MOMENT),
    )
    op.create_index("ix_scheduling_links_referral_id", "scheduling_links", ["referral_id"])
    op.create_table(
        "scheduling_dob_failures",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("source_hash", sa.String(64), nullable=False),
        sa.Column("at", MOMENT, nullable=False),
    )
    op.create_index("ix_scheduling_dob_failures_source", "scheduling_dob_failures",
                    ["source_hash", "at"])
    op.create_table(
        "scheduling_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("link_id", sa.String(32), nullable=False),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.Column("expires_at", MOMENT, nullable=False),
    )
    op.create_index("ix_scheduling_sessions_expires", "scheduling_sessions", ["expires_at"])
    op.create_table(
        "scheduling_appointments",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("server", sa.String(512), nullable=False),
        sa.Column("appointment_id", sa.String(128), nullable=False),
        sa.Column("destination", sa.String(128), nullable=False, server_default=""),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("start", MOMENT, nullable=False),
        sa.Column("end", MOMENT),
        sa.Column("time_zone", sa.String(64), nullable=False, server_default="UTC"),
        sa.Column("slots", sa.JSON(), nullable=False),
        sa.Column("location", sa.String(256), nullable=False, server_default=""),
        sa.Column("clinician", sa.String(256), nullable=False, server_default=""),
        sa.Column("booked_by", sa.String(256), nullable=False, server_default=""),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.Column("updated_at", MOMENT, nullable=False),
        sa.Column("confirmed_at", MOMENT),
        sa.Column("checked_at", MOMENT),
        sa.Column("sequence", sa.Integer(), nullable=False, server_default="0"),
        sa.UniqueConstraint("server", "appointment_id",
                            name="uq_scheduling_appointments_remote"),
    )
    op.create_index("ix_scheduling_appointments_referral_id", "scheduling_appointments",
                    ["referral_id"])
    op.create_index("ix_scheduling_appointments_status_start", "scheduling_appointments",
                    ["status", "start"])
    op.create_table(
        "scheduling_reminders",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("appointment", sa.String(64), nullable=False),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("days_before", sa.Integer(), nullable=False),
        sa.Column("due_at", MOMENT, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("sent_at", MOMENT),
        sa.UniqueConstraint("appointment", "kind", "days_before",
                            name="uq_scheduling_reminders_step"),
    )
    op.create_index("ix_scheduling_reminders_due", "scheduling_reminders", ["status", "due_at"])
    op.create_table(
        "scheduling_waitlist",
        sa.Column("referral_id", sa.String(64), primary_key=True),
        sa.Column("destination", sa.String(128), nullable=False),
        sa.Column("appointment", sa.String(64), nullable=False),
        sa.Column("current_start", MOMENT, nullable=False),
        sa.Column("opted_in_at", MOMENT, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
    )
    op.create_index("ix_scheduling_waitlist_destination", "scheduling_waitlist",
                    ["destination", "status", "opted_in_at"])
    op.create_table(
        "scheduling_offers",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(128), nullable=False),
        sa.Column("slot_key", sa.String(512), nullable=False),
        sa.Column("slot", sa.JSON(), nullable=False),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.Column("expires_at", MOMENT, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decided_at", MOMENT),
    )
    op.create_index("ix_scheduling_offers_referral_id", "scheduling_offers", ["referral_id"])
    op.create_index("ix_scheduling_offers_slot_key", "scheduling_offers", ["slot_key"])
    op.create_table(
        "scheduling_published_slots",
        sa.Column("source", sa.String(128), primary_key=True),
        sa.Column("slot_id", sa.String(128), primary_key=True),
        sa.Column("schedule_id", sa.String(128), nullable=False),
        sa.Column("location_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("start", MOMENT, nullable=False),
        sa.Column("end", MOMENT),
        sa.Column("service_type", sa.String(256), nullable=False, server_default=""),
        sa.Column("location", sa.String(256), nullable=False, server_default=""),
        sa.Column("deep_link", sa.Text(), nullable=False, server_default=""),
        sa.Column("phone", sa.String(64), nullable=False, server_default=""),
        sa.Column("updated_at", MOMENT, nullable=False),
    )
    op.create_index("ix_scheduling_published_slots_free", "scheduling_published_slots",
                    ["source", "status", "start"])
    op.create_table(
        "scheduling_requests",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", MOMENT, nullable=False),
    )
    op.create_index("ix_scheduling_requests_referral_id", "scheduling_requests",
                    ["referral_id"])


def downgrade() -> None:
    for table in ("scheduling_requests", "scheduling_published_slots", "scheduling_offers",
                  "scheduling_waitlist", "scheduling_reminders", "scheduling_appointments",
                  "scheduling_sessions", "scheduling_dob_failures", "scheduling_links"):
        op.drop_table(table)  # with its indexes
