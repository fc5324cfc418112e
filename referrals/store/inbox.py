"""The inbox: raw inbound input stored durably, with its work item, before anyone is answered."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from referrals.store.bulk import Bulk
from referrals.store.database import Database
from referrals.store.quarantine import Quarantine, storable
from referrals.store.schema import Moment, inbox
from referrals.store.work import WorkQueue

RECEIVED, PROCESSED, QUARANTINED, REJECTED, IGNORED = (
    "received", "processed", "quarantined", "rejected", "ignored")


@dataclass(frozen=True)
class Accepted:
    inbox_id: int
    duplicate: bool


@dataclass(frozen=True)
class InboxMessage:
    id: int
    channel: str
    sender: str
    dedupe_key: str | None
    received_at: datetime
    content_type: str
    headers: dict[str, Any]
    body: bytes
    status: str
    note: str


class Inbox:
    def __init__(self, db: Database, work: WorkQueue, quarantine: Quarantine) -> None:
        self.db = db
        self.work = work
        self.quarantine = quarantine

    def accept(self, channel: str, sender: str, body: bytes, *, work_kind: str | None,
               content_type: str = "", headers: dict[str, Any] | None = None,
               dedupe_key: str | None = None, work_payload: dict[str, Any] | None = None,
               status: str = RECEIVED, conn: Connection | None = None) -> Accepted:
        """Store `body` and enqueue its processing in one transaction.

        A repeated `dedupe_key` stores nothing and reports the first message (duplicate=True).
        """
        dedupe_key = storable_key(dedupe_key)
        insert = (postgresql.insert(inbox) if self.db.dialect == "postgresql"
                  else sqlite.insert(inbox))
        values = insert.values(
            channel=channel, sender=sender, dedupe_key=dedupe_key, received_at=datetime.now(UTC),
            content_type=content_type, headers=headers or {}, body=body, status=status,
        )
        if dedupe_key is not None:
            values = values.on_conflict_do_nothing(index_elements=["dedupe_key"])
        statement = values.returning(inbox.c.id)
        with self.db.using(conn) as c:
            inbox_id = c.execute(statement).scalar()
            if inbox_id is None:
                first = c.execute(sa.select(inbox.c.id)
                                  .where(inbox.c.dedupe_key == dedupe_key)).scalar_one()
                return Accepted(int(first), True)
            if work_kind is not None:
                self.work.enqueue(work_kind, {"inbox_id": int(inbox_id), **(work_payload or {})},
                                  key=f"inbox:{inbox_id}", conn=c)
        return Accepted(int(inbox_id), False)

    def accept_many(self, messages: list[dict[str, Any]], conn: Connection) -> list[Accepted]:
        """`accept` for several messages in the caller's transaction, with one INSERT for the
        messages and one for their work items (a batched writer's fast path).

        Each dict holds accept's arguments (channel, sender, body, work_kind, and optionally
        content_type, headers, dedupe_key, work_payload, status). Results are in input order;
        a dedupe key already stored, or repeated in the batch, reports the first message.
        """
        messages = [{**m, "dedupe_key": storable_key(m.get("dedupe_key"))} for m in messages]
        keys = [m.get("dedupe_key") for m in messages if m.get("dedupe_key") is not None]
        known: dict[str, int] = {}
        if keys:
            known = {k: int(i) for k, i in conn.execute(
                sa.select(inbox.c.dedupe_key, inbox.c.id).where(inbox.c.dedupe_key.in_(keys)))}
        fresh: list[int] = []
        claimed: set[str] = set()
        for index, message in enumerate(messages):
            key = message.get("dedupe_key")
            if key is None or (key not in known and key not in claimed):
                fresh.append(index)
                if key is not None:
                    claimed.add(key)
        now = datetime.now(UTC)
        rows = [{"channel": m["channel"], "sender": m["sender"],
                 "dedupe_key": m.get("dedupe_key"), "received_at": now,
                 "content_type": m.get("content_type", ""), "headers": m.get("headers") or {},
                 "body": m["body"], "status": m.get("status", RECEIVED)}
                for m in (messages[i] for i in fresh)]
        ids: dict[int, int] = {}
        if rows:
            result = conn.execute(inbox.insert().returning(inbox.c.id,
                                                           sort_by_parameter_order=True), rows)
            ids = {index: int(row_id) for index, row_id in zip(fresh, result.scalars(),
                                                              strict=True)}
        work = [(m["work_kind"], {"inbox_id": ids[i], **(m.get("work_payload") or {})},
                 f"inbox:{ids[i]}") for i, m in enumerate(messages)
                if i in ids and m.get("work_kind")]
        self.work.enqueue_many(work, conn=conn)
        for key, first in ((m.get("dedupe_key"), i) for i, m in enumerate(messages)):
            if key is not None and first in ids:
                known.setdefault(key, ids[first])
        return [Accepted(ids[i], False) if i in ids
                else Accepted(known[messages[i]["dedupe_key"]], True)
                for i in range(len(messages))]

    def reject(self, channel: str, sender: str, body: bytes, reason: str, *,
               content_type: str = "", headers: dict[str, Any] | None = None,
               conn: Connection | None = None) -> int:
        """Keep bad input: an inbox row marked rejected and a quarantine entry with the reason."""
        with self.db.using(conn) as c:
            accepted = self.accept(channel, sender, body, work_kind=None,
                                   content_type=content_type, headers=headers,
                                   status=REJECTED, conn=c)
            c.execute(inbox.update().where(inbox.c.id == accepted.inbox_id)
                      .values(note=storable(reason)[:4000]))
            self.quarantine.put(origin="inbox", kind=channel, reason=reason, original=body,
                                content_type=content_type, inbox_id=accepted.inbox_id, conn=c)
            return accepted.inbox_id

    def get(self, inbox_id: int, conn: Connection | None = None) -> InboxMessage:
        query = sa.select(inbox).where(inbox.c.id == inbox_id)
        if conn is not None:
            row = conn.execute(query).mappings().one()
        else:
            with self.db.read() as c:
                row = c.execute(query).mappings().one()
        return InboxMessage(**{k: row[k] for k in InboxMessage.__dataclass_fields__})

    def mark(self, inbox_id: int, status: str, note: str = "",
             conn: Connection | None = None) -> None:
        with self.db.using(conn) as c:
            c.execute(inbox.update().where(inbox.c.id == inbox_id).values(
                status=status, note=storable(note)[:4000], processed_at=datetime.now(UTC)))

    def mark_many(self, marks: list[tuple[int, str, str]], conn: Connection) -> None:
        """`mark` for several (inbox id, status, note) in one executemany (batch handlers)."""
        if not marks:
            return
        now = _MARK.process(conn, "processed_at", datetime.now(UTC))
        _MARK.run(conn, [{"match_id": inbox_id, "status": status, "note": storable(note)[:4000],
                          "processed_at": now} for inbox_id, status, note in marks])

    def quarantine_message(self, inbox_id: int, reason: str,
                           conn: Connection | None = None) -> int:
        """Move a stored message to quarantine (its mapping failed for good)."""
        with self.db.using(conn) as c:
            message = self.get(inbox_id, conn=c)
            self.mark(inbox_id, QUARANTINED, reason, conn=c)
            return self.quarantine.put(origin="inbox", kind=message.channel, reason=reason,
                                       original=message.body,
                                       content_type=message.content_type,
                                       inbox_id=inbox_id, conn=c)

    def counts(self) -> dict[str, int]:
        with self.db.read() as c:
            rows = c.execute(sa.select(inbox.c.status, sa.func.count())
                             .group_by(inbox.c.status)).all()
        return {status: count for status, count in rows}


_MARK = Bulk(inbox.update().where(inbox.c.id == sa.bindparam("match_id")).values(
    status=sa.bindparam("status", type_=sa.String), note=sa.bindparam("note", type_=sa.Text),
    processed_at=sa.bindparam("processed_at", type_=Moment)))


#: the dedupe_key column's length
KEY_MAX = int(inbox.c.dedupe_key.type.length or 512)  # type: ignore[attr-defined]


def storable_key(key: str | None) -> str | None:
    """`key` as the column can hold it on both databases: a key that is too long (a sender's
    id of any length goes into it) or holds a NUL becomes its beginning plus its SHA-256, so
    the same key still finds its first message (PostgreSQL refused it with a 500; SQLite
    stored it whole)."""
    if key is None or (len(key) <= KEY_MAX and "\x00" not in key):
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{storable(key)[:KEY_MAX - 72]}#sha256:{digest}"
