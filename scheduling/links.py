"""The patient link: an opaque 256-bit token for one referral, stored only as its SHA-256
hash, expiring (14 days by default), revocable; the date-of-birth check with attempt limits per
link (then the link locks, visibly to the coordinator) and per client address; and the
short-lived session that follows the check (its cookie value also stored hashed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from referrals.store.database import Database
from scheduling.tables import dob_failures, links, sessions

TOKEN_BYTES = 32  # 256 bits


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class LinkState(StrEnum):
    VALID = "valid"
    UNKNOWN = "unknown"  # no such token (mistyped, tampered, or never issued)
    EXPIRED = "expired"
    REVOKED = "revoked"
    LOCKED = "locked"


@dataclass(frozen=True)
class Link:
    id: str
    referral_id: str
    purpose: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    failed_attempts: int
    locked_at: datetime | None
    verified_at: datetime | None

    def state(self, now: datetime) -> LinkState:
        if self.revoked_at is not None:
            return LinkState.REVOKED
        if self.locked_at is not None:
            return LinkState.LOCKED
        if _utc(self.expires_at) <= now:
            return LinkState.EXPIRED
        return LinkState.VALID


@dataclass(frozen=True)
class PatientSession:
    link_id: str
    referral_id: str
    csrf_token: str
    language: str
    expires_at: datetime


@dataclass(frozen=True)
class Check:
    """What a date-of-birth attempt led to."""

    ok: bool
    state: LinkState
    attempts_left: int = 0
    throttled: bool = False


class LinkStore:
    def __init__(self, db: Database, *, days: float = 14.0, per_link: int = 5,
                 per_source: int = 20, session_minutes: float = 20.0) -> None:
        self.db = db
        self.days = days
        self.per_link = per_link
        self.per_source = per_source
        self.session_minutes = session_minutes

    # -- links --------------------------------------------------------------------------------

    def issue(self, referral_id: str, purpose: str = "booking", *,
              conn: Connection | None = None, now: datetime | None = None) -> str:
        """A new link for the referral; returns the token (shown once, never stored)."""
        token = new_token()
        at = now or datetime.now(UTC)
        with self.db.using(conn) as c:
            c.execute(links.insert().values(
                id=uuid.uuid4().hex, token_hash=digest(token), referral_id=referral_id,
                purpose=purpose, created_at=at, expires_at=at + timedelta(days=self.days),
                failed_attempts=0))
        return token

    def try_get(self, token: str, conn: Connection | None = None) -> Link | None:
        if not token or len(token) > 128:
            return None
        query = sa.select(links).where(links.c.token_hash == digest(token))
        if conn is not None:
            row = conn.execute(query).mappings().first()
        else:
            with self.db.read() as c:
                row = c.execute(query).mappings().first()
        return _link(row) if row else None

    def for_referral(self, referral_id: str) -> list[Link]:
        with self.db.read() as c:
            rows = c.execute(sa.select(links).where(links.c.referral_id == referral_id)
                             .order_by(links.c.created_at)).mappings().all()
        return [_link(r) for r in rows]

    def revoke_all(self, referral_id: str, conn: Connection | None = None,
                   now: datetime | None = None) -> int:
        at = now or datetime.now(UTC)
        with self.db.using(conn) as c:
            return int(c.execute(links.update().where(
                links.c.referral_id == referral_id, links.c.revoked_at.is_(None))
                .values(revoked_at=at)).rowcount)

    def revoke(self, link_id: str) -> bool:
        with self.db.write() as c:
            return c.execute(links.update().where(links.c.id == link_id,
                                                  links.c.revoked_at.is_(None))
                             .values(revoked_at=datetime.now(UTC))).rowcount == 1

    # -- the date-of-birth check --------------------------------------------------------------

    def source_throttled(self, source: str, now: datetime | None = None) -> bool:
        at = now or datetime.now(UTC)
        with self.db.read() as c:
            failures = c.execute(sa.select(sa.func.count()).where(
                dob_failures.c.source_hash == digest(source),
                dob_failures.c.at > at - timedelta(hours=1))).scalar_one()
        return int(failures) >= self.per_source

    def check(self, token: str, matches: bool, source: str,
              now: datetime | None = None) -> Check:
        """Record one attempt on the link: a wrong date counts against the link (which locks at
        the limit) and the source address; a right one marks the link verified."""
        at = now or datetime.now(UTC)
        with self.db.write() as c:
            row = c.execute(sa.select(links).where(links.c.token_hash == digest(token))
                            .with_for_update()).mappings().first()
            if row is None:
                self._fail_source(c, source, at)
                return Check(False, LinkState.UNKNOWN)
            link = _link(row)
            state = link.state(at)
            if state != LinkState.VALID:
                return Check(False, state)
            if matches:
                c.execute(links.update().where(links.c.id == link.id).values(verified_at=at))
                return Check(True, state, self.per_link - link.failed_attempts)
            failed = link.failed_attempts + 1
            locked = failed >= self.per_link
            c.execute(links.update().where(links.c.id == link.id).values(
                failed_attempts=failed, locked_at=at if locked else None))
            self._fail_source(c, source, at)
        return Check(False, LinkState.LOCKED if locked else LinkState.VALID,
                     max(0, self.per_link - failed))

    def _fail_source(self, c: Connection, source: str, at: datetime) -> None:
        c.execute(dob_failures.insert().values(source_hash=digest(source), at=at))
        c.execute(dob_failures.delete().where(dob_failures.c.at < at - timedelta(days=1)))

    # -- sessions -----------------------------------------------------------------------------

    def open_session(self, link: Link, language: str, now: datetime | None = None) -> str:
        """A new session for the verified link; returns the cookie value."""
        at = now or datetime.now(UTC)
        secret = new_token()
        with self.db.write() as c:
            c.execute(sessions.delete().where(sessions.c.expires_at < at))
            c.execute(sessions.insert().values(
                id_hash=digest(secret), link_id=link.id, referral_id=link.referral_id,
                csrf_token=secrets.token_urlsafe(24), language=language, created_at=at,
                expires_at=at + timedelta(minutes=self.session_minutes)))
        return secret

    def session(self, cookie: str | None, now: datetime | None = None
                ) -> PatientSession | None:
        """The live session of this cookie; None when absent, expired or its link was revoked,
        locked or expired since."""
        if not cookie or len(cookie) > 128:
            return None
        at = now or datetime.now(UTC)
        with self.db.read() as c:
            row = c.execute(sa.select(sessions, links.c.revoked_at, links.c.locked_at,
                                      links.c.expires_at.label("link_expires"))
                            .join(links, links.c.id == sessions.c.link_id)
                            .where(sessions.c.id_hash == digest(cookie))).mappings().first()
        if row is None or _utc(row["expires_at"]) <= at or row["revoked_at"] is not None \
                or row["locked_at"] is not None or _utc(row["link_expires"]) <= at:
            return None
        return PatientSession(row["link_id"], row["referral_id"], row["csrf_token"],
                              row["language"], _utc(row["expires_at"]))

    def set_language(self, cookie: str, language: str) -> None:
        with self.db.write() as c:
            c.execute(sessions.update().where(sessions.c.id_hash == digest(cookie))
                      .values(language=language))

    def close_session(self, cookie: str | None) -> None:
        if cookie:
            with self.db.write() as c:
                c.execute(sessions.delete().where(sessions.c.id_hash == digest(cookie)))


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _link(row: sa.RowMapping) -> Link:
    return Link(row["id"], row["referral_id"], row["purpose"], _utc(row["created_at"]),
                _utc(row["expires_at"]), _opt(row["revoked_at"]), int(row["failed_attempts"]),
                _opt(row["locked_at"]), _opt(row["verified_at"]))


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _opt(moment: datetime | None) -> datetime | None:
    return None if moment is None else _utc(moment)
