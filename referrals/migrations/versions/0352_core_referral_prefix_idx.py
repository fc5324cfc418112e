"""Core: drop the three referral indexes that a worklist index already covers as its prefix.

`ix_referrals_patient` (patient), `ix_referrals_owner` (owner) and `ix_referrals_deadline`
(deadline) are the leading columns of `ix_referrals_wl_patient_due`, `ix_referrals_wl_owner_due`
and `ix_referrals_wl_due` (0005_smart), which answer the same lookups on SQLite and PostgreSQL.
Each referral written updated both; the patient index is keyed by a random id, so at a large
store every new referral paid for one more B-tree page of its own.

Revision ID: 0352_core_referral_prefix_idx
Revises: 0702_core_resources_by_type_id

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

from alembic import op

revision = "0352_core_referral_prefix_idx"
down_revision = "0702_core_resources_by_type_id"
branch_labels = None
depends_on = None

#: (index, column) dropped; each is the prefix of a worklist index
COVERED = (("ix_referrals_patient", "patient"), ("ix_referrals_owner", "owner"),
           ("ix_referrals_deadline", "deadline"))


def upgrade() -> None:
    for name, _column in COVERED:
        op.drop_index(name, "referrals")


def downgrade() -> None:
    for name, column in COVERED:
        op.create_index(name, "referrals", [column])
