"""HL7 v2 bridge: referral keys normalised (an id without a namespace belongs to the sending
application), an index for the expiry of parked messages.

Revision ID: 0350_hl7_keys
Revises: 0003_hl7

Keys written before this revision kept a bare id as `id^` (no namespace). They become
`id^<sending application>` (the MSH-3 part of the sender that stored them), which is how the
bridge spells them from now on, so later messages that name the same id, bare or with the
sender's namespace, still find their referral, and parked messages still wake.

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0350_hl7_keys"
down_revision = "0003_hl7"
branch_labels = None
depends_on = None

KEYS = sa.table("hl7_referral_keys", sa.column("key", sa.String), sa.column("sender", sa.String))
PARKED = sa.table("hl7_parked", sa.column("id", sa.Integer), sa.column("inbox_id", sa.Integer),
                  sa.column("waiting_for", sa.String))
INBOX = sa.table("inbox", sa.column("id", sa.Integer), sa.column("sender", sa.String))


def upgrade() -> None:
    op.create_index("ix_hl7_parked_parked_at", "hl7_parked", ["parked_at"])
    conn = op.get_bind()
    taken = set(conn.execute(sa.select(KEYS.c.key)).scalars())
    for key, sender in conn.execute(sa.select(KEYS.c.key, KEYS.c.sender)
                                    .where(KEYS.c.key.like("%^"))).all():
        renamed = key + _application(sender)
        if renamed == key:
            continue
        if renamed in taken:
            conn.execute(KEYS.delete().where(KEYS.c.key == key))
        else:
            conn.execute(KEYS.update().where(KEYS.c.key == key).values(key=renamed))
            taken.add(renamed)
    rows = conn.execute(sa.select(PARKED.c.id, PARKED.c.waiting_for, INBOX.c.sender)
                        .join(INBOX, INBOX.c.id == PARKED.c.inbox_id)
                        .where(PARKED.c.waiting_for.like("%^"))).all()
    for row_id, waiting_for, sender in rows:
        conn.execute(PARKED.update().where(PARKED.c.id == row_id)
                     .values(waiting_for=waiting_for + _application(sender)))


def downgrade() -> None:
    op.drop_index("ix_hl7_parked_parked_at", table_name="hl7_parked")


def _application(sender: str) -> str:
    """The sending application of a sender `MSH-3^MSH-4`."""
    return sender.split("^", 1)[0]
