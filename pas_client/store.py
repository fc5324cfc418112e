"""Prior-authorization requests and responses in the database."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pas_client.tables import (
    pas_coverage,
    pas_replies,
    pas_requests,
    pas_responses,
    pas_subscriptions,
)
from referrals.store.database import Database
from referrals.store.schema import referrals, work_items

FINAL = frozenset({"approved", "modified", "partially-approved", "no-auth-required", "denied",
                   "cancelled", "rejected", "blocked"})
#: states of a request the payer has not decided yet: followed with $inquire until its deadline
UNDECIDED = frozenset({"submitted", "pended", "error", "unknown"})


@dataclass(frozen=True)
class PriorAuthRequest:
    id: str
    referral_id: str
    payer: str
    kind: str
    chain_id: str
    prior_id: str | None
    version_no: int
    bundle_identifier: str
    claim_identifier: str
    claim_full_url: str
    status: str
    decision: dict[str, Any] | None
    auth_number: str
    decided_at: str
    bundle: bytes
    findings: list[dict[str, Any]]
    last_error: str
    created_at: datetime
    updated_at: datetime
    deadline_at: datetime | None = None
    next_check_at: datetime | None = None
    checks: int = 0
    escalated_at: datetime | None = None
    sender: str | None = None

    @property
    def task_id(self) -> str:
        return f"pa-{self.chain_id}"

    def bundle_json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.bundle)
        return data

    def item_sequences(self) -> set[int]:
        if not self.bundle:
            return set()
        claim = self.bundle_json()["entry"][0]["resource"]
        return {int(item["sequence"]) for item in claim.get("item", [])}


@dataclass(frozen=True)
class StoredReply:
    id: int
    request_id: str | None
    referral_id: str | None
    payer: str
    operation: str
    http_status: int
    headers: dict[str, str]
    body: bytes
    received_at: datetime
    interpretation: str
    note: str

    def text(self, limit: int = 4000) -> str:
        """The body as text for people (undecodable bytes shown as escapes), cut at `limit`."""
        shown = self.body.decode("utf-8", errors="backslashreplace")
        return shown if len(shown) <= limit else shown[:limit] + f"... ({len(shown)} chars)"

    def to_json(self, body: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id, "request_id": self.request_id, "referral_id": self.referral_id,
            "payer": self.payer, "operation": self.operation, "http_status": self.http_status,
            "received_at": self.received_at.isoformat(), "interpretation": self.interpretation,
            "note": self.note, "bytes": len(self.body)}
        if body:
            data["headers"] = self.headers
            data["body"] = self.text(limit=10**9)
        return data


def _reply(row: Any) -> StoredReply:
    values = _aware(dict(row._mapping))
    values["body"] = bytes(values["body"])
    return StoredReply(**values)


INSTANTS = ("created_at", "updated_at", "deadline_at", "next_check_at", "escalated_at",
            "received_at", "checked_at")


def _aware(values: dict[str, Any]) -> dict[str, Any]:
    """SQLite gives naive datetimes back: they are UTC."""
    for key in INSTANTS:
        moment = values.get(key)
        if isinstance(moment, datetime) and moment.tzinfo is None:
            values[key] = moment.replace(tzinfo=UTC)
    return values


def _row(row: Any) -> PriorAuthRequest:
    values = _aware(dict(row._mapping))
    values["bundle"] = bytes(values["bundle"])
    return PriorAuthRequest(**values)


class PriorAuthStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, request: PriorAuthRequest, conn: Connection | None = None) -> None:
        with self.db.using(conn) as c:
            c.execute(pas_requests.insert().values(**request.__dict__))

    def add_unless_live(self, request: PriorAuthRequest,
                        live: frozenset[str]) -> PriorAuthRequest:
        """Add `request` unless its referral already has a request to the same payer whose
        chain's latest is in `live`: that one then. The referral's row is locked meanwhile
        (FOR UPDATE on PostgreSQL; SQLite's writer lock), so two workers never both add one."""
        c_ = pas_requests.c
        with self.db.write() as c:
            c.execute(sa.select(referrals.c.id).where(referrals.c.id == request.referral_id)
                      .with_for_update())
            rows = c.execute(sa.select(pas_requests).where(
                c_.referral_id == request.referral_id, c_.payer == request.payer)
                .order_by(c_.created_at, c_.version_no)).all()
            latest = {row.chain_id: row for row in rows}
            found = [row for row in latest.values() if row.status in live]
            if found:
                return _row(found[-1])
            c.execute(pas_requests.insert().values(**request.__dict__))
        return request

    def claim_send(self, request_id: str, sender: str) -> bool:
        """Claim a request in `sending` for the work item `sender` before the HTTP call: True
        for the first claimant, and again for it (its retry resends the same bytes), or when
        the work item that claimed it is no longer pending (done or quarantined)."""
        c_ = pas_requests.c
        active = sa.exists().where(work_items.c.idempotency_key == c_.sender,
                                   work_items.c.status == "pending")
        with self.db.write() as c:
            claimed = c.execute(pas_requests.update().where(
                c_.id == request_id, c_.status == "sending",
                sa.or_(c_.sender.is_(None), c_.sender == sender, ~active))
                .values(sender=sender, updated_at=datetime.now(UTC)))
        return bool(claimed.rowcount == 1)

    def try_get(self, request_id: str, conn: Connection | None = None) -> PriorAuthRequest | None:
        with self.db.using(conn) as c:
            row = c.execute(sa.select(pas_requests).where(pas_requests.c.id == request_id)).first()
        return _row(row) if row else None

    def ids_starting_with(self, prefix: str, limit: int = 5) -> list[str]:
        """Request ids that begin with `prefix` (at most `limit`, in id order): the short ids
        `refloop pas status` prints. Ids hold only hex digits and hyphens."""
        if not prefix or not set(prefix.lower()) <= set("0123456789abcdef-"):
            return []
        low = prefix.lower()
        with self.db.read() as c:
            found = c.execute(sa.select(pas_requests.c.id).where(
                pas_requests.c.id.startswith(low, autoescape=True))
                .order_by(pas_requests.c.id).limit(limit)).scalars()
            return [str(i) for i in found if str(i).startswith(low)]

    def for_referral(self, referral_id: str, payer: str | None = None) -> list[PriorAuthRequest]:
        query = sa.select(pas_requests).where(pas_requests.c.referral_id == referral_id)
        if payer is not None:
            query = query.where(pas_requests.c.payer == payer)
        with self.db.read() as c:
            rows = c.execute(query.order_by(pas_requests.c.created_at,
                                            pas_requests.c.version_no)).all()
        return [_row(r) for r in rows]

    def latest_in_chain(self, chain_id: str) -> PriorAuthRequest | None:
        with self.db.read() as c:
            row = c.execute(sa.select(pas_requests).where(pas_requests.c.chain_id == chain_id)
                            .order_by(pas_requests.c.version_no.desc()).limit(1)).first()
        return _row(row) if row else None

    def match(self, *, full_urls: list[str], identifiers: list[str],
              auth_numbers: list[str], payer: str | None = None) -> PriorAuthRequest | None:
        """The request a ClaimResponse answers: by Claim fullUrl, Claim identifier, auth number."""
        c = pas_requests.c
        clauses: list[sa.ColumnElement[bool]] = []
        if full_urls:
            clauses.append(c.claim_full_url.in_(full_urls))
        if identifiers:
            clauses.append(c.claim_identifier.in_(identifiers))
        if auth_numbers:
            clauses.append(sa.and_(c.auth_number.in_(auth_numbers), c.auth_number != ""))
        if not clauses:
            return None
        query = sa.select(pas_requests).where(sa.or_(*clauses))
        if payer is not None:
            query = query.where(c.payer == payer)
        with self.db.read() as conn:
            row = conn.execute(query.order_by(c.version_no.desc()).limit(1)).first()
        return _row(row) if row else None

    def pending_for_payer(self, payer: str) -> list[PriorAuthRequest]:
        """Requests the payer has not decided yet (pended, or a reply we could not read)."""
        c_ = pas_requests.c
        with self.db.read() as c:
            rows = c.execute(sa.select(pas_requests).where(
                c_.payer == payer, c_.status.in_(sorted(UNDECIDED)))).all()
        return [_row(r) for r in rows]

    def due_for_follow_up(self, now: datetime, limit: int = 200) -> list[PriorAuthRequest]:
        """Undecided requests whose next $inquire is due."""
        c_ = pas_requests.c
        with self.db.read() as c:
            rows = c.execute(sa.select(pas_requests).where(
                c_.next_check_at.is_not(None), c_.next_check_at <= now,
                c_.status.in_(sorted(UNDECIDED))).order_by(c_.next_check_at)
                .limit(limit)).all()
        return [_row(r) for r in rows]

    # --- raw replies ------------------------------------------------------------------
    def add_reply(self, *, payer: str, operation: str, status: int, headers: dict[str, str],
                  body: bytes, request_id: str | None = None, referral_id: str | None = None,
                  conn: Connection | None = None) -> int:
        """Keep a reply exactly as received, before anything reads it; its id."""
        with self.db.using(conn) as c:
            return int(c.execute(pas_replies.insert().values(
                request_id=request_id, referral_id=referral_id, payer=payer,
                operation=operation, http_status=status, headers=headers, body=body,
                received_at=datetime.now(UTC)).returning(pas_replies.c.id)).scalar_one())

    def interpret_reply(self, reply_id: int, interpretation: str, note: str = "", *,
                        request_id: str | None = None, referral_id: str | None = None) -> None:
        values: dict[str, Any] = {"interpretation": interpretation, "note": note[:4000]}
        if request_id is not None:
            values["request_id"] = request_id
        if referral_id is not None:
            values["referral_id"] = referral_id
        with self.db.write() as c:
            c.execute(pas_replies.update().where(pas_replies.c.id == reply_id).values(**values))

    def try_get_reply(self, reply_id: int) -> StoredReply | None:
        with self.db.read() as c:
            row = c.execute(sa.select(pas_replies).where(pas_replies.c.id == reply_id)).first()
        return _reply(row) if row else None

    def replies(self, *, request_id: str | None = None, referral_id: str | None = None
                ) -> list[StoredReply]:
        query = sa.select(pas_replies)
        if request_id is not None:
            query = query.where(pas_replies.c.request_id == request_id)
        if referral_id is not None:
            query = query.where(pas_replies.c.referral_id == referral_id)
        with self.db.read() as c:
            rows = c.execute(query.order_by(pas_replies.c.id)).all()
        return [_reply(r) for r in rows]

    def update(self, request_id: str, conn: Connection | None = None, **values: Any) -> None:
        values["updated_at"] = datetime.now(UTC)
        with self.db.using(conn) as c:
            c.execute(pas_requests.update().where(pas_requests.c.id == request_id)
                      .values(**values))

    def add_response(self, request_id: str, source: str, body: dict[str, Any], overall: str,
                     http_status: int | None = None, conn: Connection | None = None) -> bool:
        """Keep a response; False when the very same body was already recorded."""
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        with self.db.using(conn) as c:
            exists = c.execute(sa.select(pas_responses.c.id).where(
                pas_responses.c.request_id == request_id,
                pas_responses.c.digest == digest)).first()
            if exists:
                return False
            c.execute(pas_responses.insert().values(
                request_id=request_id, source=source, digest=digest, http_status=http_status,
                overall=overall, body=body, received_at=datetime.now(UTC)))
        return True

    def responses(self, request_id: str) -> list[dict[str, Any]]:
        with self.db.read() as c:
            rows = c.execute(sa.select(pas_responses).where(
                pas_responses.c.request_id == request_id).order_by(pas_responses.c.id)).all()
        return [dict(r._mapping) for r in rows]

    def subscription(self, payer: str) -> dict[str, Any] | None:
        with self.db.read() as c:
            row = c.execute(sa.select(pas_subscriptions).where(
                pas_subscriptions.c.payer == payer)).first()
        return dict(row._mapping) if row else None

    def save_subscription(self, payer: str, subscription_id: str, hook_id: str) -> None:
        with self.db.write() as c:
            c.execute(pas_subscriptions.delete().where(pas_subscriptions.c.payer == payer))
            c.execute(pas_subscriptions.insert().values(
                payer=payer, subscription_id=subscription_id, hook_id=hook_id,
                created_at=datetime.now(UTC)))

    # --- which referrals need authorization; eligibility ---------------------------------
    def save_coverage(self, referral_id: str, payer: str, requirement: str, source: str,
                      detail: dict[str, Any], eligibility: dict[str, Any] | None) -> None:
        with self.db.write() as c:
            c.execute(pas_coverage.delete().where(pas_coverage.c.referral_id == referral_id))
            c.execute(pas_coverage.insert().values(
                referral_id=referral_id, payer=payer, requirement=requirement,
                source=source[:2000], detail=detail, eligibility=eligibility,
                checked_at=datetime.now(UTC)))

    def coverage(self, referral_id: str) -> dict[str, Any] | None:
        with self.db.read() as c:
            row = c.execute(sa.select(pas_coverage).where(
                pas_coverage.c.referral_id == referral_id)).first()
        return _aware(dict(row._mapping)) if row else None
