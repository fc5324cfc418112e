"""Quarantine: bad input or exhausted work, kept with its reason and original bytes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from referrals.store.database import Database
from referrals.store.schema import quarantine


@dataclass(frozen=True)
class QuarantineEntry:
    id: int
    origin: str
    kind: str
    reason: str
    content_type: str
    original: bytes
    inbox_id: int | None
    work_item_id: int | None
    created_at: datetime
    resolved_at: datetime | None


def storable(text: str) -> str:
    """`text` with NUL characters written out (\\x00): reasons and notes quote bad input (a path,
    an id) and PostgreSQL's text columns cannot hold a NUL."""
    return text.replace("\x00", "\\x00")


class Quarantine:
    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, *, origin: str, kind: str, reason: str, original: bytes,
            content_type: str = "", inbox_id: int | None = None,
            work_item_id: int | None = None, conn: Connection | None = None) -> int:
        with self.db.using(conn) as c:
            return int(c.execute(quarantine.insert().values(
                origin=origin, kind=kind, reason=storable(reason), original=original,
                content_type=content_type, inbox_id=inbox_id, work_item_id=work_item_id,
                created_at=datetime.now(UTC),
            ).returning(quarantine.c.id)).scalar_one())

    def list(self, *, include_resolved: bool = False, limit: int = 200) -> list[QuarantineEntry]:
        query = sa.select(quarantine).order_by(quarantine.c.id.desc()).limit(limit)
        if not include_resolved:
            query = query.where(quarantine.c.resolved_at.is_(None))
        with self.db.read() as c:
            return [QuarantineEntry(**dict(r)) for r in c.execute(query).mappings()]

    def resolve(self, entry_id: int) -> bool:
        with self.db.write() as c:
            return c.execute(quarantine.update().where(quarantine.c.id == entry_id)
                             .values(resolved_at=datetime.now(UTC))).rowcount == 1
