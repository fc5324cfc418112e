"""Core: resources found by type and id alone (an Appointment or DocumentReference a referral's
event links, whichever server it came from) use an index instead of reading the table.

Revision ID: 0702_core_resources_by_type_id
Revises: 0500_core_coordinator_tasks

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

from alembic import op

revision = "0702_core_resources_by_type_id"
down_revision = "0500_core_coordinator_tasks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_resources_type_id", "resources", ["resource_type", "resource_id"])


def downgrade() -> None:
    op.drop_index("ix_resources_type_id", "resources")
