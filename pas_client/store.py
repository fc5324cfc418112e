"""Prior-authorization requests and responses in the database."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pas_client.tables import pas_requests, pas_responses, pas_subscriptions
from referrals.store.database import Database

FINAL = frozenset({"approved", "denied", "cancelled", "rejected", "blocked"})


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

    @property
    def task_id(self) -> str:
        return f"pa-{self.chain_id}"

    def bundle_json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.bundle)
        return data


def _row(row: Any) -> PriorAuthRequest:
    values = dict(row._mapping)
    values["bundle"] = bytes(values["bundle"])
    return PriorAuthRequest(**values)


class PriorAuthStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, request: PriorAuthRequest, conn: Connection | None = None) -> None:
        with self.db.using(conn) as c:
            c.execute(pas_requests.insert().values(**request.__dict__))

    def try_get(self, request_id: str, conn: Connection | None = None) -> PriorAuthRequest | None:
        with self.db.using(conn) as c:
            row = c.execute(sa.select(pas_requests).where(pas_requests.c.id == request_id)).first()
        return _row(row) if row else None

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
        with self.db.read() as c:
            rows = c.execute(sa.select(pas_requests).where(
                pas_requests.c.payer == payer, pas_requests.c.status == "pended")).all()
        return [_row(r) for r in rows]

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
