"""Reading and writing the outreach tables, and the Patient the detection adapters stored."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from outreach.rules import Consent, Decision, Sent, consent_state
from outreach.tables import (
    outreach_consents,
    outreach_decisions,
    outreach_failing,
    outreach_messages,
    outreach_plans,
)
from referrals.store.database import Database
from referrals.store.schema import resources

#: statuses of an outbound message after the provider took it (they count against the caps)
HANDED = ("queued", "accepted", "sent", "delivered", "read", "ringing",
          "in-progress", "completed", "busy", "no-answer", "undelivered",
          "unknown")  # maybe handed over (an interrupted email): counted, to stay within caps
#: provider statuses in the order they happen; a callback never moves a message backwards
RANK = {"sending": 0, "accepted": 1, "queued": 2, "initiated": 3, "ringing": 4, "sent": 5,
        "in-progress": 5, "delivered": 6, "read": 7, "completed": 7, "busy": 7,
        "no-answer": 7, "canceled": 7, "undelivered": 8, "failed": 8}


@dataclass(frozen=True)
class Plan:
    id: str
    key: str
    referral_id: str
    patient: str
    ladder: str
    ladder_version: int
    rungs: list[dict[str, Any]]
    zone: str
    status: str
    stop_reason: str
    done: dict[str, str]
    started_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Message:
    id: str
    key: str
    direction: str
    referral_id: str
    patient: str
    purpose: str
    channel: str
    status: str
    address: str = ""
    plan_id: str | None = None
    rung: int | None = None
    language: str = ""
    subject: str = ""
    body: str = ""
    provider_sid: str | None = None
    error_code: str = ""
    rule: str = ""
    reason: str = ""
    reply_context: str = ""
    in_response_to: str | None = None
    attempts: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    sent_at: datetime | None = None
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class OutreachStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- the Patient ------------------------------------------------------------------------

    def patient(self, reference: str, conn: Connection | None = None) -> dict[str, Any] | None:
        return self.resource(reference, conn)

    def resource(self, reference: str, conn: Connection | None = None) -> dict[str, Any] | None:
        """The newest stored copy of `Type/<id>` (a Patient, a ServiceRequest), from whichever
        server it came."""
        if reference.count("/") != 1:
            return None
        rtype, rid = reference.split("/")
        query = (sa.select(resources.c.body)
                 .where(resources.c.resource_type == rtype, resources.c.resource_id == rid,
                        resources.c.deleted.is_(False))
                 .order_by(resources.c.updated_at.desc()).limit(1))
        with _read(self.db, conn) as c:
            found: dict[str, Any] | None = c.execute(query).scalar()
        return found

    # -- plans ------------------------------------------------------------------------------

    def create_plan(self, c: Connection, *, key: str, referral_id: str, patient: str,
                    ladder: str, version: int, rungs: list[dict[str, Any]], zone: str,
                    started_at: datetime) -> Plan:
        values = {"id": str(uuid.uuid4()), "key": key, "referral_id": referral_id,
                  "patient": patient, "ladder": ladder, "ladder_version": version,
                  "rungs": rungs, "zone": zone, "status": "active", "stop_reason": "",
                  "done": {}, "started_at": started_at, "updated_at": started_at}
        insert = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        c.execute(insert(outreach_plans).values(**values)
                  .on_conflict_do_nothing(index_elements=["key"]))
        found = c.execute(sa.select(outreach_plans).where(outreach_plans.c.key == key)
                          ).mappings().one()
        return _plan(found)

    def plan(self, plan_id: str, conn: Connection | None = None, *, lock: bool = False
             ) -> Plan | None:
        query = sa.select(outreach_plans).where(outreach_plans.c.id == plan_id)
        if lock and self.db.dialect == "postgresql":
            query = query.with_for_update()
        with _read(self.db, conn) as c:
            row = c.execute(query).mappings().first()
        return _plan(row) if row else None

    def plans_for(self, referral_id: str, conn: Connection | None = None) -> list[Plan]:
        query = (sa.select(outreach_plans).where(outreach_plans.c.referral_id == referral_id)
                 .order_by(outreach_plans.c.started_at, outreach_plans.c.id))
        with _read(self.db, conn) as c:
            return [_plan(r) for r in c.execute(query).mappings()]

    def has_active_plan(self, c: Connection, referral_id: str) -> bool:
        return c.execute(sa.select(outreach_plans.c.id).where(
            outreach_plans.c.referral_id == referral_id,
            outreach_plans.c.status.in_(("active", "paused"))).limit(1)).first() is not None

    def update_plan(self, c: Connection, plan_id: str, now: datetime, **values: Any) -> None:
        c.execute(outreach_plans.update().where(outreach_plans.c.id == plan_id)
                  .values(updated_at=now, **values))

    def mark_rung(self, c: Connection, plan: Plan, rung: int, outcome: str, now: datetime
                  ) -> Plan:
        fresh = self.plan(plan.id, c, lock=True) or plan
        done = {**fresh.done, str(rung): outcome}
        finished = fresh.status == "active" and len(done) >= len(fresh.rungs)
        values: dict[str, Any] = {"done": done}
        if finished:
            values["status"] = "finished"
        self.update_plan(c, plan.id, now, **values)
        return Plan(**{**fresh.__dict__, **values, "updated_at": now})

    # -- messages ---------------------------------------------------------------------------

    def message_by_key(self, key: str, conn: Connection | None = None) -> Message | None:
        return self._one(outreach_messages.c.key == key, conn)

    def message(self, message_id: str, conn: Connection | None = None) -> Message | None:
        return self._one(outreach_messages.c.id == message_id, conn)

    def message_by_sid(self, sid: str, conn: Connection | None = None) -> Message | None:
        return self._one(outreach_messages.c.provider_sid == sid, conn)

    def put_message(self, c: Connection, message: Message) -> Message:
        """Insert the message, or update the row with its key (the id stays the first one's)."""
        values = dict(message.__dict__)
        existing = c.execute(sa.select(outreach_messages.c.id, outreach_messages.c.created_at)
                             .where(outreach_messages.c.key == message.key)).first()
        if existing is None:
            c.execute(outreach_messages.insert().values(**values))
            return message
        values.pop("id")
        values.pop("created_at")
        c.execute(outreach_messages.update().where(outreach_messages.c.key == message.key)
                  .values(**values))
        return Message(**{**message.__dict__, "id": existing.id,
                          "created_at": existing.created_at})

    def update_message(self, c: Connection, message_id: str, **values: Any) -> None:
        c.execute(outreach_messages.update().where(outreach_messages.c.id == message_id)
                  .values(**values))

    def messages_for(self, referral_id: str) -> list[Message]:
        query = (sa.select(outreach_messages)
                 .where(outreach_messages.c.referral_id == referral_id)
                 .order_by(outreach_messages.c.created_at, outreach_messages.c.id))
        with self.db.read() as c:
            return [_message(r) for r in c.execute(query).mappings()]

    def last_outbound_to(self, address: str, conn: Connection | None = None,
                         channels: Iterable[str] = ("sms", "voice")) -> list[Message]:
        """The newest message sent to `address` per patient (newest first)."""
        query = (sa.select(outreach_messages)
                 .where(outreach_messages.c.address == address,
                        outreach_messages.c.direction == "out",
                        outreach_messages.c.channel.in_(list(channels)),
                        outreach_messages.c.provider_sid.is_not(None))
                 .order_by(outreach_messages.c.created_at.desc()).limit(50))
        with _read(self.db, conn) as c:
            rows = [_message(r) for r in c.execute(query).mappings()]
        seen: dict[str, Message] = {}
        for row in rows:
            seen.setdefault(row.patient, row)
        return list(seen.values())

    def history(self, patient: str, since: datetime, conn: Connection | None = None
                ) -> list[Sent]:
        query = sa.select(outreach_messages.c.purpose, outreach_messages.c.channel,
                          outreach_messages.c.sent_at).where(
            outreach_messages.c.patient == patient, outreach_messages.c.direction == "out",
            outreach_messages.c.sent_at.is_not(None), outreach_messages.c.sent_at >= since,
            outreach_messages.c.status.in_(HANDED))
        with _read(self.db, conn) as c:
            return [Sent(r.purpose, r.channel, r.sent_at) for r in c.execute(query)]

    def sent_count(self, referral_id: str, conn: Connection) -> int:
        return int(conn.execute(sa.select(sa.func.count()).select_from(outreach_messages).where(
            outreach_messages.c.referral_id == referral_id,
            outreach_messages.c.direction == "out",
            outreach_messages.c.sent_at.is_not(None))).scalar_one())

    def _one(self, where: Any, conn: Connection | None) -> Message | None:
        with _read(self.db, conn) as c:
            row = c.execute(sa.select(outreach_messages).where(where)).mappings().first()
        return _message(row) if row else None

    # -- decisions --------------------------------------------------------------------------

    def record_decision(self, c: Connection, referral_id: str, key: str, purpose: str,
                        decision: Decision, now: datetime) -> None:
        c.execute(outreach_decisions.insert().values(
            referral_id=referral_id, message_key=key, purpose=purpose,
            channel=decision.channel, outcome=decision.outcome, rule=decision.rule,
            reason=decision.reason[:2000], not_before=decision.not_before, at=now))

    def decisions_for(self, referral_id: str) -> list[dict[str, Any]]:
        query = (sa.select(outreach_decisions)
                 .where(outreach_decisions.c.referral_id == referral_id)
                 .order_by(outreach_decisions.c.id))
        with self.db.read() as c:
            return [dict(r) for r in c.execute(query).mappings()]

    # -- consent and failing contact points --------------------------------------------------

    def add_consent(self, c: Connection, *, patient: str, channel: str, kind: str,
                    source: str, address: str = "", text: str = "", at: datetime) -> None:
        c.execute(outreach_consents.insert().values(
            patient=patient, channel=channel, address=address, kind=kind, source=source,
            text=text[:200], at=at))

    def consent(self, patient: str, addresses: Iterable[str],
                conn: Connection | None = None) -> Consent:
        wanted = [a for a in addresses if a]
        with _read(self.db, conn) as c:
            rows = c.execute(sa.select(outreach_consents).where(sa.or_(
                outreach_consents.c.patient == patient,
                outreach_consents.c.address.in_(wanted)))).mappings().all()
            failing = [f"{r.channel}:{r.address}" for r in c.execute(
                sa.select(outreach_failing.c.channel, outreach_failing.c.address).where(
                    outreach_failing.c.address.in_(wanted)))]
        mine = [(r["at"], r["channel"], r["kind"]) for r in rows
                if r["patient"] == patient and not r["address"]]
        blocked: set[str] = set()
        for address in {r["address"] for r in rows if r["address"]}:
            events = [(r["at"], r["channel"], r["kind"]) for r in rows
                      if r["address"] == address]
            if consent_state(events):
                blocked.add(address)
        return Consent(consent_state(mine), frozenset(blocked), frozenset(failing))

    def lock_address(self, c: Connection, address: str) -> None:
        """Hold `address`'s consent until the transaction ends, so two replies from it (two
        STOPs, or two STARTs, handled at once) are applied one after the other and the second
        sees the first: a transaction-scoped advisory lock on PostgreSQL; SQLite's writers are
        serialized by their BEGIN IMMEDIATE already."""
        if self.db.dialect != "postgresql":
            return
        digest = hashlib.sha256(b"outreach-consent:" + address.encode()).digest()
        c.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                  {"key": int.from_bytes(digest[:8], "big", signed=True)})

    def address_consent_events(self, address: str, conn: Connection
                               ) -> list[tuple[datetime, str, str]]:
        """(at, channel, kind) of the opt-outs and opt-ins written from `address`."""
        rows = conn.execute(sa.select(outreach_consents.c.at, outreach_consents.c.channel,
                                      outreach_consents.c.kind)
                            .where(outreach_consents.c.address == address))
        return [(r.at, r.channel, r.kind) for r in rows]

    def consent_events(self, patient: str | None = None, conn: Connection | None = None
                       ) -> list[dict[str, Any]]:
        query = sa.select(outreach_consents).order_by(outreach_consents.c.at,
                                                      outreach_consents.c.id)
        if patient is not None:
            query = query.where(outreach_consents.c.patient == patient)
        with _read(self.db, conn) as c:
            return [dict(r) for r in c.execute(query).mappings()]

    def mark_failing(self, c: Connection, address: str, channel: str, code: str, reason: str,
                     now: datetime) -> None:
        insert = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        c.execute(insert(outreach_failing).values(
            address=address, channel=channel, code=code, reason=reason[:2000], since=now
        ).on_conflict_do_nothing(index_elements=["address", "channel"]))


class _read:
    """Join the caller's connection, or open a read transaction."""

    def __init__(self, db: Database, conn: Connection | None) -> None:
        self.db, self.conn = db, conn
        self._context: Any = None

    def __enter__(self) -> Connection:
        if self.conn is not None:
            return self.conn
        self._context = self.db.read()
        found: Connection = self._context.__enter__()
        return found

    def __exit__(self, *exc: Any) -> None:
        if self._context is not None:
            self._context.__exit__(*exc)


def _plan(row: Any) -> Plan:
    return Plan(**{k: row[k] for k in Plan.__dataclass_fields__})


def _message(row: Any) -> Message:
    return Message(**{k: row[k] for k in Message.__dataclass_fields__})
