"""Access tokens Refloop issues (opaque, random; only their SHA-256 is stored, so a copy of the
database holds no usable token) and the client-assertion ids already used."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from access.tables import assertions, clients, tokens
from referrals.store.database import Database


@dataclass(frozen=True)
class IssuedToken:
    client_id: str
    scopes: tuple[str, ...]
    tenant: str | None
    expires_at: datetime


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def save(self, token: str, *, client_id: str, scopes: str, lifetime: int) -> None:
        now = datetime.now(UTC)
        with self.db.write() as c:
            c.execute(tokens.insert().values(
                token_hash=token_hash(token), client_id=client_id, scopes=scopes,
                issued_at=now, expires_at=now + timedelta(seconds=lifetime)))

    def find(self, token: str) -> IssuedToken | None:
        """The live token (not expired, its client still registered), or None."""
        query = (sa.select(tokens.c.client_id, tokens.c.scopes, tokens.c.expires_at,
                           clients.c.tenant)
                 .join(clients, clients.c.client_id == tokens.c.client_id)
                 .where(tokens.c.token_hash == token_hash(token),
                        clients.c.removed_at.is_(None)))
        with self.db.read() as c:
            row = c.execute(query).first()
        if row is None:
            return None
        expires = row.expires_at if row.expires_at.tzinfo else \
            row.expires_at.replace(tzinfo=UTC)
        if expires <= datetime.now(UTC):
            return None
        return IssuedToken(row.client_id, tuple(row.scopes.split()), row.tenant, expires)

    def use_assertion(self, client_id: str, jti: str, expires_at: datetime) -> bool:
        """Record a client assertion's jti; False when this client used it before (a replay)."""
        key = hashlib.sha256(jti.encode()).hexdigest()
        try:
            with self.db.write() as c:
                c.execute(assertions.insert().values(client_id=client_id, jti_hash=key,
                                                     expires_at=expires_at))
        except sa.exc.IntegrityError:
            return False
        return True

    def sweep(self, now: datetime | None = None) -> int:
        """Delete expired tokens and expired assertion ids; how many rows went."""
        moment = now or datetime.now(UTC)
        with self.db.write() as c:
            gone = c.execute(tokens.delete().where(tokens.c.expires_at < moment)).rowcount
            gone += c.execute(assertions.delete().where(
                assertions.c.expires_at < moment - timedelta(minutes=5))).rowcount
        return int(gone)
