"""Tables of the core store. Changes go through Alembic migrations (referrals/migrations)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from referrals.model import PAYER_MAX, SPECIALTY_MAX

metadata = sa.MetaData()

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """TIMESTAMP WITH TIME ZONE that always stores and returns aware UTC datetimes.

    SQLite keeps no offset (it would store a non-UTC wall clock as if it were UTC) and PostgreSQL
    returns values in the session's time zone; both are normalised here. Naive input is UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        return to_utc(value) if isinstance(value, datetime) else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        return to_utc(value) if isinstance(value, datetime) else value


def to_utc(moment: datetime) -> datetime:
    """`moment` as an aware UTC datetime (naive values are taken to be UTC already)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


Moment = UtcDateTime()

referrals = sa.Table(
    "referrals", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("source_key", sa.String(512), nullable=False, unique=True),
    sa.Column("stage", sa.String(32), nullable=False),
    sa.Column("task_status", sa.String(32), nullable=False),
    sa.Column("business_status", sa.String(16)),
    sa.Column("priority", sa.String(16), nullable=False),
    sa.Column("patient", sa.String(256), nullable=False),
    sa.Column("owner", sa.String(256), nullable=False, server_default=""),
    sa.Column("service_request", sa.String(512), nullable=False),
    sa.Column("specialty", sa.String(SPECIALTY_MAX), nullable=False, server_default=""),
    sa.Column("payer", sa.String(PAYER_MAX), nullable=False, server_default=""),
    sa.Column("auth_state", sa.String(32), nullable=False, server_default=""),
    sa.Column("deadline", Moment),
    sa.Column("created_at", Moment, nullable=False),
    sa.Column("updated_at", Moment, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("state", JSONType, nullable=False),
    sa.Column("task", JSONType, nullable=False),
)
sa.Index("ix_referrals_stage_updated", referrals.c.stage, referrals.c.updated_at)
sa.Index("ix_referrals_updated", referrals.c.updated_at, referrals.c.id)
sa.Index("ix_referrals_task_status", referrals.c.task_status)
sa.Index("ix_referrals_business_status", referrals.c.business_status)
sa.Index("ix_referrals_service_request", referrals.c.service_request)

referral_events = sa.Table(
    "referral_events", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("referral_id", sa.String(64), sa.ForeignKey("referrals.id"), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("from_stage", sa.String(32)),
    sa.Column("to_stage", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("actor_display", sa.String(256), nullable=False, server_default=""),
    sa.Column("at", Moment, nullable=False),
    sa.Column("reason_code", sa.String(128)),
    sa.Column("reason_text", sa.Text),
    sa.Column("source", sa.String(256), nullable=False, server_default=""),
    sa.Column("source_message", sa.String(256), nullable=False, server_default=""),
    sa.Column("data", JSONType, nullable=False),
    sa.Column("provenance", JSONType, nullable=False),
    sa.UniqueConstraint("referral_id", "seq", name="uq_referral_events_seq"),
)

resources = sa.Table(
    "resources", metadata,
    sa.Column("server", sa.String(512), primary_key=True),
    sa.Column("resource_type", sa.String(64), primary_key=True),
    sa.Column("resource_id", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("remote_version", sa.String(64)),
    sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("updated_at", Moment, nullable=False),
    sa.Column("body", JSONType),
)

#: by type and id alone, whatever the server (a linked Appointment or DocumentReference)
sa.Index("ix_resources_type_id", resources.c.resource_type, resources.c.resource_id)

resource_versions = sa.Table(
    "resource_versions", metadata,
    sa.Column("server", sa.String(512), primary_key=True),
    sa.Column("resource_type", sa.String(64), primary_key=True),
    sa.Column("resource_id", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("remote_version", sa.String(64)),
    sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("recorded_at", Moment, nullable=False),
    sa.Column("body", JSONType),
)

inbox = sa.Table(
    "inbox", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("sender", sa.String(256), nullable=False),
    sa.Column("dedupe_key", sa.String(512), unique=True),
    sa.Column("received_at", Moment, nullable=False),
    sa.Column("content_type", sa.String(128), nullable=False, server_default=""),
    sa.Column("headers", JSONType, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("processed_at", Moment),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
)
sa.Index("ix_inbox_status", inbox.c.status, inbox.c.id)

work_items = sa.Table(
    "work_items", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("idempotency_key", sa.String(512), nullable=False, unique=True),
    sa.Column("payload", JSONType, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("run_at", Moment, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer, nullable=False, server_default="8"),
    sa.Column("lease_owner", sa.String(128)),
    sa.Column("lease_expires", Moment),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", Moment, nullable=False),
    sa.Column("done_at", Moment),
)
sa.Index("ix_work_items_due", work_items.c.status, work_items.c.run_at)

quarantine = sa.Table(
    "quarantine", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("origin", sa.String(32), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("content_type", sa.String(128), nullable=False, server_default=""),
    sa.Column("original", sa.LargeBinary, nullable=False),
    sa.Column("inbox_id", sa.BigInteger),
    sa.Column("work_item_id", sa.BigInteger),
    sa.Column("created_at", Moment, nullable=False),
    sa.Column("resolved_at", Moment),
)

cursors = sa.Table(
    "cursors", metadata,
    sa.Column("name", sa.String(512), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", Moment, nullable=False),
)

coordinator_tasks = sa.Table(
    "coordinator_tasks", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(512), nullable=False, unique=True),
    sa.Column("referral_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("due_at", Moment),
    sa.Column("outcomes", JSONType, nullable=False),
    sa.Column("on_outcome", sa.String(64)),
    sa.Column("data", JSONType, nullable=False),
    sa.Column("outcome", sa.String(64)),
    sa.Column("actor", sa.String(256), nullable=False, server_default=""),
    sa.Column("actor_display", sa.String(256), nullable=False, server_default=""),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", Moment, nullable=False),
    sa.Column("closed_at", Moment),
)
sa.Index("ix_coordinator_tasks_open", coordinator_tasks.c.status, coordinator_tasks.c.due_at)
sa.Index("ix_coordinator_tasks_referral", coordinator_tasks.c.referral_id)
