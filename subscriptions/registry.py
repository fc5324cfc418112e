"""Hooks and registrations: our endpoint paths, their secrets, the Subscriptions behind them and
their health. A secret is shown once, when its hook is opened or its secret rotated; the store
keeps only its SHA-256 hash (secrets are 256 random bits, so a fast hash is enough), compared
in constant time. Secrets are never logged or printed."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from referrals.store.database import Database
from subscriptions.tables import registrations

REFERRAL_KIND = "subscriptions.referral"
REFERRALS = "referrals"


#: the secret_hash of a hook authenticated by its path alone (never the hash of a secret, and
#: not empty, so a row written without a hash accepts nothing)
PATH_ONLY = "path-only"


def hash_secret(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Hook:
    """An endpoint of ours a server delivers notifications to. `secret` is set only on the
    Hook returned when the hook is opened or its secret rotated (it is not stored)."""

    id: str
    url: str
    secret: str
    server: str
    purpose: str
    deliver_kind: str
    secret_hash: str = ""
    previous_hash: str | None = None  # accepted until previous_until (a rotation's grace)
    previous_until: datetime | None = None
    subscription_id: str | None = None

    @property
    def header(self) -> str:
        """The `channel.header` line the server must send (only while the secret is known)."""
        if not self.secret:
            raise ValueError("the secret is only known when the hook is opened or rotated")
        return f"Authorization: Bearer {self.secret}"

    @property
    def path_only(self) -> bool:
        """Authenticated by its unguessable path alone (no secret: opened for a server that
        sends no headers)."""
        return self.secret_hash == PATH_ONLY

    def accepts(self, presented: str, now: datetime | None = None) -> bool:
        """Is `presented` this hook's secret (or, during a rotation's grace, the previous one)?
        Compared in constant time. A path-only hook accepts any (its path is the credential)."""
        if self.path_only:
            return True
        digest = hash_secret(presented)
        current = hmac.compare_digest(digest, self.secret_hash)
        previous = self.previous_hash is not None and self.previous_until is not None and \
            hmac.compare_digest(digest, self.previous_hash) and \
            (now or datetime.now(UTC)) < self.previous_until
        return current or previous

    def __repr__(self) -> str:  # never show the secret
        return f"Hook(id={self.id!r}, server={self.server!r}, purpose={self.purpose!r})"


@dataclass(frozen=True)
class Registration:
    hook_id: str
    server: str
    purpose: str
    deliver_kind: str
    subscription_id: str | None
    flavour: str
    criteria: str
    status: str
    created_at: datetime
    updated_at: datetime
    last_notification_at: datetime | None
    last_notification_type: str | None
    last_event_number: str | None
    notifications: int
    errors: int
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Registry:
    def __init__(self, db: Database, base_url: str, cache_seconds: float = 30.0) -> None:
        self.db = db
        self.base_url = base_url.rstrip("/")
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Hook]] = {}
        self._lock = threading.Lock()

    def url_for(self, hook_id: str) -> str:
        return f"{self.base_url}/hooks/{hook_id}"

    def open_hook(self, *, server: str, purpose: str, deliver_kind: str, flavour: str = "",
                  criteria: str = "", status: str = "new", path_only: bool = False,
                  conn: Connection | None = None) -> Hook:
        """A new endpoint. `path_only`: no secret; the sender is known by the unguessable
        path alone (192 random bits), for servers that cannot send a header."""
        hook_id = _new_hook_id()
        secret = "" if path_only else secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self.db.using(conn) as c:
            c.execute(registrations.insert().values(
                hook_id=hook_id, server=server.rstrip("/"), purpose=purpose,
                deliver_kind=deliver_kind, secret_hash=hash_secret(secret) if secret else PATH_ONLY,
                flavour=flavour, criteria=criteria, status=status, created_at=now,
                updated_at=now))
        return Hook(hook_id, self.url_for(hook_id), secret, server.rstrip("/"), purpose,
                    deliver_kind, hash_secret(secret) if secret else PATH_ONLY)

    def try_get_hook(self, hook_id: str, *, cached: bool = False,
                     max_age: float | None = None) -> Hook | None:
        """The hook, from a short per-process cache when `cached` (the request path); with
        `max_age`, a cached entry older than that many seconds is read again. An id no hook
        can have (control characters, which PostgreSQL cannot even compare) is None at once."""
        if not hook_id.isprintable():
            return None
        if cached:
            with self._lock:
                hit = self._cache.get(hook_id)
            now = time.monotonic()
            if hit is not None and hit[0] > now and (
                    max_age is None or now - (hit[0] - self.cache_seconds) <= max_age):
                return hit[1]
        with self.db.read() as c:
            row = c.execute(sa.select(registrations).where(
                registrations.c.hook_id == hook_id)).mappings().first()
        if row is None:
            return None
        hook = Hook(row["hook_id"], self.url_for(row["hook_id"]), "", row["server"],
                    row["purpose"], row["deliver_kind"], row["secret_hash"],
                    row["previous_secret_hash"], _aware(row["previous_secret_until"]),
                    row["subscription_id"])
        with self._lock:
            self._cache[hook_id] = (time.monotonic() + self.cache_seconds, hook)
        return hook

    def rotate_secret(self, hook_id: str, grace_seconds: float,
                      conn: Connection | None = None) -> Hook:
        """A new secret for the hook; the previous one stays accepted for `grace_seconds`
        (notifications already on their way, other processes' caches). Returns the hook with
        its new secret (shown once)."""
        secret = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self.db.using(conn) as c:
            row = c.execute(sa.select(registrations.c.secret_hash).where(
                registrations.c.hook_id == hook_id)).first()
            if row is None:
                raise KeyError(hook_id)
            c.execute(registrations.update().where(registrations.c.hook_id == hook_id).values(
                secret_hash=hash_secret(secret), previous_secret_hash=row.secret_hash,
                previous_secret_until=now + timedelta(seconds=grace_seconds), updated_at=now))
        with self._lock:
            self._cache.pop(hook_id, None)
        found = self.try_get_hook(hook_id)
        assert found is not None
        return Hook(found.id, found.url, secret, found.server, found.purpose, found.deliver_kind,
                    found.secret_hash, found.previous_hash, found.previous_until,
                    found.subscription_id)

    def restore_secret(self, hook_id: str, conn: Connection | None = None) -> None:
        """Undo a rotation whose new secret could not be given to the server: the previous
        secret becomes the only one again."""
        with self.db.using(conn) as c:
            row = c.execute(sa.select(registrations.c.previous_secret_hash).where(
                registrations.c.hook_id == hook_id)).first()
            if row is None or not row.previous_secret_hash:
                return
            c.execute(registrations.update().where(registrations.c.hook_id == hook_id).values(
                secret_hash=row.previous_secret_hash, previous_secret_hash=None,
                previous_secret_until=None, updated_at=datetime.now(UTC)))
        with self._lock:
            self._cache.pop(hook_id, None)

    def attach(self, hook_id: str, subscription_id: str, *, status: str | None = None,
               conn: Connection | None = None) -> None:
        values: dict[str, Any] = {"subscription_id": subscription_id,
                                  "updated_at": datetime.now(UTC)}
        if status:
            values["status"] = status
        with self.db.using(conn) as c:
            c.execute(registrations.update().where(registrations.c.hook_id == hook_id)
                      .values(**values))

    def set_status(self, hook_id: str, status: str, error: str | None = None,
                   conn: Connection | None = None) -> None:
        values: dict[str, Any] = {"status": status, "updated_at": datetime.now(UTC)}
        if error:
            values.update(last_error=error[:2000], errors=registrations.c.errors + 1)
        with self.db.using(conn) as c:
            c.execute(registrations.update().where(registrations.c.hook_id == hook_id)
                      .values(**values))

    def record_notification(self, hook_id: str, kind: str, event_number: str | None,
                            conn: Connection | None = None) -> None:
        values: dict[str, Any] = {"last_notification_at": datetime.now(UTC),
                                  "last_notification_type": kind,
                                  "notifications": registrations.c.notifications + 1}
        if event_number is not None:
            values["last_event_number"] = event_number
        with self.db.using(conn) as c:
            c.execute(registrations.update().where(registrations.c.hook_id == hook_id)
                      .values(**values))

    def record_error(self, hook_id: str, error: str, conn: Connection | None = None) -> None:
        with self.db.using(conn) as c:
            c.execute(registrations.update().where(registrations.c.hook_id == hook_id).values(
                errors=registrations.c.errors + 1, last_error=error[:2000],
                updated_at=datetime.now(UTC)))

    def get(self, hook_id: str, conn: Connection | None = None) -> Registration:
        found = self.rows(hook_id=hook_id, conn=conn)
        if not found:
            raise KeyError(hook_id)
        return found[0]

    def rows(self, *, server: str | None = None, purpose: str | None = None,
             hook_id: str | None = None, conn: Connection | None = None) -> list[Registration]:
        query = sa.select(*[registrations.c[name] for name in Registration.__dataclass_fields__]
                          ).order_by(
            registrations.c.server, registrations.c.created_at)
        if server is not None:
            query = query.where(registrations.c.server == server.rstrip("/"))
        if purpose is not None:
            query = query.where(registrations.c.purpose == purpose)
        if hook_id is not None:
            query = query.where(registrations.c.hook_id == hook_id)
        if conn is not None:
            rows = conn.execute(query).mappings().all()
        else:
            with self.db.read() as c:
                rows = c.execute(query).mappings().all()
        return [Registration(**dict(r)) for r in rows]

    def servers(self) -> list[str]:
        with self.db.read() as c:
            return sorted(c.execute(sa.select(registrations.c.server).distinct()
                                    .where(registrations.c.purpose == REFERRALS)).scalars())


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes (stored as UTC)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _new_hook_id() -> str:
    """32 URL-safe random characters, never starting with "-" (a command line would take it for
    an option)."""
    while True:
        found = secrets.token_urlsafe(24)
        if not found.startswith("-"):
            return found
