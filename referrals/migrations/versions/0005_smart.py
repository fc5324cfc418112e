"""SMART app: launch states, server-side sessions; indexes for the worklist's keyset pages.

Revision ID: 0005_smart
Revises: 0001_core
"""

from __future__ import annotations

from alembic import op

from smart_app.tables import launch_states, sessions

revision = "0005_smart"
down_revision = "0001_core"
branch_labels = None
depends_on = None

#: (name, columns): each worklist filter has an index that ends in the sort key (deadline, id)
WORKLIST_INDEXES = [
    ("ix_referrals_wl_due", ["deadline", "id"]),
    ("ix_referrals_wl_created", ["created_at", "id"]),
    ("ix_referrals_wl_stage_due", ["stage", "deadline", "id"]),
    ("ix_referrals_wl_owner_due", ["owner", "deadline", "id"]),
    ("ix_referrals_wl_priority_due", ["priority", "deadline", "id"]),
    ("ix_referrals_wl_specialty_due", ["specialty", "deadline", "id"]),
    ("ix_referrals_wl_patient_due", ["patient", "deadline", "id"]),
]


def upgrade() -> None:
    bind = op.get_bind()
    launch_states.create(bind)
    sessions.create(bind)
    for name, columns in WORKLIST_INDEXES:
        op.create_index(name, "referrals", columns)


def downgrade() -> None:
    for name, _columns in reversed(WORKLIST_INDEXES):
        op.drop_index(name, table_name="referrals")
    sessions.drop(op.get_bind())
    launch_states.drop(op.get_bind())
