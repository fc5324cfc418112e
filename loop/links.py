"""Secure links to providers: a specialist's office uploads the consult note, a referring
practice reads it. An opaque 256-bit token per link, stored only as its SHA-256, expiring
(`[loop] link_days`), revocable. The note link also asks for the patient's date of birth (with
attempt limits per link, which then locks, and per client address) before a short session
(its cookie value also hashed) shows the note, so a forwarded or leaked mail alone shows nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from loop.tables import link_failures, links, sessions
from referrals.store.database import Database

UPLOAD, NOTE = "upload", "note"
VALID, UNKNOWN, EXPIRED, REVOKED, LOCKED, USED = (
    "valid", "unknown", "expired", "revoked", "locked", "used")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class Link:
    id: str
    referral_id: str
    purpose: str
    document: str
    document_server: str
    recipient: str
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None
    failed_attempts: int
    locked_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return REVOKED
        if self.locked_at is not None:
            return LOCKED
        if self.expires_at <= now:
            return EXPIRED
        if self.purpose == UPLOAD and self.used_at is not None:
            return USED
        return VALID


@dataclass(frozen=True)
class NoteSession:
    link: Link
    csrf_token: str
    expires_at: datetime


class LinkStore:
    def __init__(self, db: Database, *, days: float, per_link: int, per_source: int,
                 session_minutes: float) -> None:
        self.db = db
        self.days = days
        self.per_link = per_link
        self.per_source = per_source
        self.session_minutes = session_minutes

    def issue(self, referral_id: str, purpose: str, now: datetime, *, recipient: str = "",
              document: str = "", document_server: str = "",
              conn: Connection | None = None) -> str:
        """A new link; returns its token (put in the mail once, never stored)."""
        token = secrets.token_urlsafe(32)
        with self.db.using(conn) as c:
            c.execute(links.insert().values(
                id=uuid.uuid4().hex, token_hash=digest(token), referral_id=referral_id,
                purpose=purpose, document=document, document_server=document_server,
                recipient=recipient[:320], created_at=now,
                expires_at=now + timedelta(days=self.days), failed_attempts=0))
        return token

    def try_get(self, token: str, purpose: str) -> Link | None:
        if not token or len(token) > 128:
            return None
        with self.db.read() as c:
            row = c.execute(sa.select(links).where(links.c.token_hash == digest(token),
                                                   links.c.purpose == purpose)).mappings().first()
        return _link(row) if row else None

    def of_referral(self, referral_id: str) -> list[Link]:
        with self.db.read() as c:
            rows = c.execute(sa.select(links).where(links.c.referral_id == referral_id)
                             .order_by(links.c.created_at)).mappings().all()
        return [_link(r) for r in rows]

    def mark_used(self, link_id: str, now: datetime, conn: Connection) -> bool:
        """First use of a link (an upload, a note read); False when it was used before."""
        return conn.execute(links.update().where(links.c.id == link_id,
                                                 links.c.used_at.is_(None))
                            .values(used_at=now)).rowcount == 1

    def revoke_all(self, referral_id: str, purpose: str, now: datetime,
                   conn: Connection | None = None) -> int:
        with self.db.using(conn) as c:
            return int(c.execute(links.update().where(
                links.c.referral_id == referral_id, links.c.purpose == purpose,
                links.c.revoked_at.is_(None)).values(revoked_at=now)).rowcount)

    # -- guessing and the date of birth -----------------------------------------------------

    def throttled(self, source: str, now: datetime) -> bool:
        with self.db.read() as c:
            failures = c.execute(sa.select(sa.func.count()).where(
                link_failures.c.source_hash == digest(source),
                link_failures.c.at > now - timedelta(hours=1))).scalar_one()
        return int(failures) >= self.per_source

    def fail_source(self, source: str, now: datetime, conn: Connection | None = None) -> None:
        """A wrong token or date of birth from this address (kept a day)."""
        with self.db.using(conn) as c:
            c.execute(link_failures.insert().values(source_hash=digest(source), at=now))
            c.execute(link_failures.delete().where(link_failures.c.at < now - timedelta(days=1)))

    def check_birth_date(self, link: Link, matches: bool, source: str, now: datetime) -> str:
        """Record one date-of-birth attempt on a note link: VALID when right; a wrong one counts
        against the link (LOCKED at the limit) and the address. Returns the link's state."""
        with self.db.write() as c:
            query = sa.select(links).where(links.c.id == link.id)
            if self.db.dialect == "postgresql":
                query = query.with_for_update()
            current = _link(c.execute(query).mappings().one())
            state = current.state(now)
            if state != VALID or matches:
                return state
            failed = current.failed_attempts + 1
            locked = failed >= self.per_link
            c.execute(links.update().where(links.c.id == link.id).values(
                failed_attempts=failed, locked_at=now if locked else None))
            self.fail_source(source, now, c)
        return LOCKED if locked else VALID

    def attempts_left(self, link_id: str) -> int:
        with self.db.read() as c:
            failed = c.execute(sa.select(links.c.failed_attempts)
                               .where(links.c.id == link_id)).scalar_one()
        return max(0, self.per_link - int(failed))

    # -- the note session -------------------------------------------------------------------

    def open_session(self, link: Link, now: datetime) -> str:
        secret = secrets.token_urlsafe(32)
        with self.db.write() as c:
            c.execute(sessions.delete().where(sessions.c.expires_at < now))
            c.execute(sessions.insert().values(
                id_hash=digest(secret), link_id=link.id, referral_id=link.referral_id,
                csrf_token=secrets.token_urlsafe(24), created_at=now,
                expires_at=now + timedelta(minutes=self.session_minutes)))
        return secret

    def session(self, cookie: str | None, now: datetime) -> NoteSession | None:
        """The live session of this cookie; None when absent, expired, or its link is no
        longer valid."""
        if not cookie or len(cookie) > 128:
            return None
        with self.db.read() as c:
            row = c.execute(sa.select(sessions.c.csrf_token, sessions.c.expires_at,
                                      sessions.c.link_id)
                            .where(sessions.c.id_hash == digest(cookie))).first()
            link_row = c.execute(sa.select(links).where(links.c.id == row.link_id)
                                 ).mappings().first() if row else None
        if row is None or link_row is None or row.expires_at <= now:
            return None
        link = _link(link_row)
        if link.state(now) != VALID:
            return None
        return NoteSession(link, row.csrf_token, row.expires_at)

    def close_session(self, cookie: str | None) -> None:
        if cookie:
            with self.db.write() as c:
                c.execute(sessions.delete().where(sessions.c.id_hash == digest(cookie)))


def _link(row: sa.RowMapping) -> Link:
    return Link(id=row["id"], referral_id=row["referral_id"], purpose=row["purpose"],
                document=row["document"], document_server=row["document_server"],
                recipient=row["recipient"], expires_at=row["expires_at"],
                used_at=row["used_at"], revoked_at=row["revoked_at"],
                failed_attempts=int(row["failed_attempts"]), locked_at=row["locked_at"])
