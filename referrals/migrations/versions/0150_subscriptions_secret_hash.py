"""Subscriptions: hook secrets stored as SHA-256 hashes, with the previous hash kept during a
rotation's grace period; existing plain secrets are hashed and the plain column dropped.

Revision ID: 0150_subscriptions_secret_hash
Revises: 0002_subscriptions

Frozen history: the DDL is spelled out here as it stood when this revision was written, and nothing
is imported from the project. Later schema changes go in new revisions.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0150_subscriptions_secret_hash"
down_revision = "0002_subscriptions"
branch_labels = None
depends_on = None

MOMENT = sa.DateTime(timezone=True)
TABLE = "subscription_registrations"


def _hash(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.add_column(sa.Column("secret_hash", sa.String(80), nullable=False,
                                   server_default=""))
        batch.add_column(sa.Column("previous_secret_hash", sa.String(80)))
        batch.add_column(sa.Column("previous_secret_until", MOMENT))
    bind = op.get_bind()
    table = sa.table(TABLE, sa.column("hook_id", sa.String), sa.column("secret", sa.String),
                     sa.column("secret_hash", sa.String))
    rows = bind.execute(sa.select(table.c.hook_id, table.c.secret)).all()
    for hook_id, secret in rows:
        bind.execute(table.update().where(table.c.hook_id == hook_id)
                     .values(secret_hash=_hash(secret)))
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_column("secret")


def downgrade() -> None:
    # a hash cannot be turned back into the secret: hooks must be registered again
    with op.batch_alter_table(TABLE) as batch:
        batch.add_column(sa.Column("secret", sa.String(128), nullable=False,
                                   server_default=""))
        batch.drop_column("previous_secret_until")
        batch.drop_column("previous_secret_hash")
        batch.drop_column("secret_hash")
