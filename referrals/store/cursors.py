"""Durable named cursors (a reconciliation `_lastUpdated` per server, event numbers...)."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from referrals.store.database import Database
from referrals.store.schema import cursors


class Cursors:
    def __init__(self, db: Database) -> None:
        self.db = db

    def try_get(self, name: str, conn: Connection | None = None) -> str | None:
        query = sa.select(cursors.c.value).where(cursors.c.name == name)
        if conn is not None:
            return conn.execute(query).scalar()
        with self.db.read() as c:
            return c.execute(query).scalar()

    def set(self, name: str, value: str, conn: Connection | None = None) -> None:
        now = datetime.now(UTC)
        with self.db.using(conn) as c:
            updated = c.execute(cursors.update().where(cursors.c.name == name)
                                .values(value=value, updated_at=now)).rowcount
            if not updated:
                c.execute(cursors.insert().values(name=name, value=value, updated_at=now))
