"""The core store: referrals, event log, resources with history, inbox, work items, quarantine.

Revision ID: 0001_core
Revises:
"""

from __future__ import annotations

from alembic import op

from referrals.store.schema import (
    cursors,
    inbox,
    quarantine,
    referral_events,
    referrals,
    resource_versions,
    resources,
    work_items,
)

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None

TABLES = [referrals, referral_events, resources, resource_versions, inbox, work_items,
          quarantine, cursors]

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
    bind = op.get_bind()
    for table in TABLES:
        table.create(bind)
    guards = SQLITE_GUARDS if bind.dialect.name == "sqlite" else POSTGRES_GUARDS
    for statement in guards:
        op.execute(statement)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS referral_events_append_only ON referral_events")
        op.execute("DROP FUNCTION IF EXISTS refloop_append_only()")
    for table in reversed(TABLES):
        table.drop(bind)
