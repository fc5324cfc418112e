"""Analytics rollups: per-referral facts from the event log, the cohort cube of additive counts
and duration histograms, and where referrals fell out (all rebuildable from the event log).

Revision ID: 0750_analytics
Revises: 0001_core

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0750_analytics"
down_revision = "0001_core"
branch_labels = None
depends_on = None

#: aware timestamps: TIMESTAMP WITH TIME ZONE on PostgreSQL, DATETIME on SQLite
INSTANT = sa.DateTime(timezone=True)
#: JSONB on PostgreSQL, JSON elsewhere
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
COUNTS = ("referrals", "withdrawn", "accepted", "contacted", "scheduled", "visited", "notes",
          "receipts", "no_shows", "open", "auth_requested", "auth_decided", "steps_refloop",
          "steps_person", "team_started", "team_on_time", "team_late", "team_missed",
          "asm_started", "asm_on_time", "asm_late", "asm_missed")
#: program clocks on a referral's facts
CLOCKS = tuple(f"{program}_{what}_at" for program in ("team", "asm")
               for what in ("due", "met", "missed"))
DIMENSIONS = ("specialty", "referrer", "destination", "payer", "priority")
TABLES = ["analytics_facts", "analytics_cube", "analytics_dropoff"]


def upgrade() -> None:
    op.create_table(
        "analytics_facts",
        sa.Column("referral_id", sa.String(64), primary_key=True),
        sa.Column("source_key", sa.String(512), nullable=False),
        sa.Column("patient", sa.String(256), nullable=False),
        sa.Column("specialty", sa.String(128), nullable=False, server_default=""),
        sa.Column("referrer", sa.String(256), nullable=False, server_default=""),
        sa.Column("destination", sa.String(256), nullable=False, server_default=""),
        sa.Column("payer", sa.String(256), nullable=False, server_default=""),
        sa.Column("priority", sa.String(16), nullable=False, server_default=""),
        sa.Column("detected_at", INSTANT, nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.Column("deadline", INSTANT),
        sa.Column("withdrawn", sa.Boolean(), nullable=False),
        sa.Column("accepted_at", INSTANT),
        sa.Column("contacted_at", INSTANT),
        sa.Column("scheduled_at", INSTANT),
        sa.Column("visit_at", INSTANT),
        sa.Column("note_at", INSTANT),
        sa.Column("receipt_at", INSTANT),
        sa.Column("auth_requested_at", INSTANT),
        sa.Column("auth_decided_at", INSTANT),
        sa.Column("ended_at", INSTANT),
        sa.Column("no_shows", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("dropped", sa.String(32), nullable=False, server_default=""),
        sa.Column("drop_reason", sa.String(128), nullable=False, server_default=""),
        sa.Column("steps_refloop", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("steps_person", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_seq", sa.Integer(), nullable=False, server_default="0"),
        *(sa.Column(name, INSTANT) for name in CLOCKS),
    )
    op.create_index("ix_analytics_facts_detected", "analytics_facts",
                    ["detected_at", "referral_id"])
    op.create_index("ix_analytics_facts_open_deadline", "analytics_facts", ["open", "deadline"])
    op.create_index("ix_analytics_facts_patient", "analytics_facts", ["patient", "detected_at"])
    for dim in DIMENSIONS:
        op.create_index(f"ix_analytics_facts_{dim}", "analytics_facts", [dim, "detected_at"])
    op.create_table(
        "analytics_cube",
        sa.Column("grain", sa.String(1), primary_key=True),
        sa.Column("dim", sa.String(16), primary_key=True),
        sa.Column("value", sa.String(256), primary_key=True),
        sa.Column("period", sa.String(10), primary_key=True),
        *(sa.Column(name, sa.Integer(), nullable=False, server_default="0") for name in COUNTS),
        sa.Column("histograms", JSON, nullable=False),
    )
    op.create_index("ix_analytics_cube_period", "analytics_cube", ["grain", "dim", "period"])
    op.create_table(
        "analytics_dropoff",
        sa.Column("grain", sa.String(1), primary_key=True),
        sa.Column("dim", sa.String(16), primary_key=True),
        sa.Column("value", sa.String(256), primary_key=True),
        sa.Column("period", sa.String(10), primary_key=True),
        sa.Column("step", sa.String(32), primary_key=True),
        sa.Column("outcome", sa.String(32), primary_key=True),
        sa.Column("reason", sa.String(128), primary_key=True),
        sa.Column("n", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)  # with its indexes
