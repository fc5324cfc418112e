"""Server-side sessions and pending launches, in the database.

The browser holds one opaque cookie (its hash is stored); each completed launch is a session
row whose id travels in the page URL, so two frames launched for two patients keep their own
context. A session is usable only with the cookie that created it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from referrals.errors import RefloopError
from referrals.store.database import Database
from smart_app.context import LaunchContext
from smart_app.tables import launch_states, sessions
from smart_app.tokens import TokenVault, digest, new_secret, same

STATE_LIFETIME = timedelta(minutes=10)


class TooManyLaunches(RefloopError):
    """More pending launches than allowed (from one address, or in all); try again later."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class PendingLaunch:
    tenant: str
    iss: str
    launch: str | None
    code_verifier: str
    nonce: str
    redirect_uri: str


@dataclass(frozen=True)
class Session:
    id: str
    tenant: str
    iss: str
    context: LaunchContext
    csrf_token: str
    token_expires_at: datetime | None
    version: int
    sealed_tokens: str


class SessionStore:
    def __init__(self, db: Database, vault: TokenVault, *, idle: timedelta,
                 absolute: timedelta, states_per_source: int = 20,
                 states_max: int = 10_000) -> None:
        self.db = db
        self.vault = vault
        self.idle = idle
        self.absolute = absolute
        self.states_per_source = states_per_source
        self.states_max = states_max

    # -- the OAuth leg -------------------------------------------------------------------
    def begin_launch(self, browser: str, *, tenant: str, iss: str, launch: str | None,
                     code_verifier: str, nonce: str, redirect_uri: str,
                     source: str = "") -> str:
        """Record a pending launch bound to this browser; return its fresh `state`. Anyone
        may start a launch, so expired and used states go first, and a source address (or
        everyone together) over its limit gets TooManyLaunches instead of a new row."""
        state = new_secret()
        now = _now()
        source_key = digest(source)
        with self.db.write() as c:
            self._sweep_states(c, now)
            mine = c.execute(sa.select(sa.func.count()).select_from(launch_states).where(
                launch_states.c.source == source_key)).scalar_one()
            if mine >= self.states_per_source:
                raise TooManyLaunches("too many launches were started from this address in the "
                                      "last few minutes; wait a minute and relaunch",
                                      self._retry_after(c, now, source_key))
            if c.execute(sa.select(sa.func.count()).select_from(launch_states)
                         ).scalar_one() >= self.states_max:
                raise TooManyLaunches("Refloop is handling too many launches right now; wait a "
                                      "minute and relaunch", 60)
            c.execute(launch_states.insert().values(
                state_hash=digest(state), browser_hash=digest(browser), tenant=tenant, iss=iss,
                launch=launch, redirect_uri=redirect_uri, created_at=now, source=source_key,
                secrets=self.vault.seal({"code_verifier": code_verifier, "nonce": nonce})))
        return state

    def sweep(self) -> int:
        """Delete expired or used launch states and ended sessions; how many rows went."""
        now = _now()
        with self.db.write() as c:
            gone = self._sweep_states(c, now)
            gone += c.execute(sessions.delete().where(sa.or_(
                sessions.c.expires_at < now, sessions.c.last_seen < now - self.idle))).rowcount
        return int(gone)

    @staticmethod
    def _sweep_states(c: Any, now: datetime) -> int:
        return int(c.execute(launch_states.delete().where(sa.or_(
            launch_states.c.created_at < now - STATE_LIFETIME,
            launch_states.c.used_at.is_not(None)))).rowcount)

    @staticmethod
    def _retry_after(c: Any, now: datetime, source_key: str) -> int:
        oldest = c.execute(sa.select(sa.func.min(launch_states.c.created_at)).where(
            launch_states.c.source == source_key)).scalar_one()
        if oldest is None:
            return 60
        return max(1, int((_aware(oldest) + STATE_LIFETIME - now).total_seconds()) + 1)

    def consume_state(self, state: str, browser: str | None) -> PendingLaunch | None:
        """The pending launch for `state`, once: None when unknown, used, stale or another
        browser's (the state is spent either way)."""
        now = _now()
        with self.db.write() as c:
            row = c.execute(sa.select(launch_states).where(
                launch_states.c.state_hash == digest(state))).mappings().first()
            if row is None or row["used_at"] is not None:
                return None
            c.execute(launch_states.update().where(
                launch_states.c.state_hash == row["state_hash"]).values(used_at=now))
        if _aware(row["created_at"]) < now - STATE_LIFETIME:
            return None
        if browser is None or not same(row["browser_hash"], digest(browser)):
            return None
        secrets = self.vault.open(row["secrets"])
        return PendingLaunch(tenant=row["tenant"], iss=row["iss"], launch=row["launch"],
                             code_verifier=secrets["code_verifier"], nonce=secrets["nonce"],
                             redirect_uri=row["redirect_uri"])

    # -- sessions ------------------------------------------------------------------------
    def create(self, browser: str, *, tenant: str, iss: str, context: LaunchContext,
               tokens: dict[str, Any], token_expires_at: datetime | None) -> Session:
        sid, csrf, now = new_secret(), new_secret(), _now()
        with self.db.write() as c:
            c.execute(sessions.delete().where(sessions.c.expires_at < now))
            c.execute(sessions.delete().where(sessions.c.last_seen < now - self.idle))
            c.execute(sessions.insert().values(
                id=sid, browser_hash=digest(browser), tenant=tenant, iss=iss,
                user_ref=context.user, context=context.to_dict(),
                tokens=self.vault.seal(tokens), token_expires_at=token_expires_at,
                csrf_token=csrf, version=1, created_at=now, last_seen=now,
                expires_at=now + self.absolute))
        return self.get(sid, browser) or _gone(sid)

    def get(self, sid: str, browser: str | None) -> Session | None:
        """The live session `sid` for this browser; None (and removed) when idle or expired."""
        if not sid or browser is None:
            return None
        with self.db.read() as c:
            row = c.execute(sa.select(sessions).where(sessions.c.id == sid)).mappings().first()
        if row is None or not same(row["browser_hash"], digest(browser)):
            return None
        now = _now()
        if _aware(row["last_seen"]) < now - self.idle or _aware(row["expires_at"]) < now:
            self.end(sid)
            return None
        if now - _aware(row["last_seen"]) > timedelta(seconds=30):
            with self.db.write() as c:
                c.execute(sessions.update().where(sessions.c.id == sid).values(last_seen=now))
        return _session(row)

    def tokens(self, session: Session) -> dict[str, Any]:
        return self.vault.open(session.sealed_tokens)

    def replace_tokens(self, session: Session, tokens: dict[str, Any],
                       token_expires_at: datetime | None) -> bool:
        """Store refreshed tokens unless another request refreshed first (optimistic lock)."""
        with self.db.write() as c:
            result = c.execute(sessions.update().where(
                sessions.c.id == session.id, sessions.c.version == session.version,
            ).values(tokens=self.vault.seal(tokens), token_expires_at=token_expires_at,
                     version=session.version + 1))
        return result.rowcount == 1

    def rotate_browser(self, old: str, new: str) -> None:
        """Give the browser a new cookie value after a launch; its sessions follow."""
        with self.db.write() as c:
            c.execute(sessions.update().where(sessions.c.browser_hash == digest(old))
                      .values(browser_hash=digest(new)))
            c.execute(launch_states.update().where(launch_states.c.browser_hash == digest(old))
                      .values(browser_hash=digest(new)))

    def end(self, sid: str) -> None:
        with self.db.write() as c:
            c.execute(sessions.delete().where(sessions.c.id == sid))


def _session(row: Any) -> Session:
    expires = row["token_expires_at"]
    return Session(id=row["id"], tenant=row["tenant"], iss=row["iss"],
                   context=LaunchContext.from_dict(row["context"]),
                   csrf_token=row["csrf_token"],
                   token_expires_at=_aware(expires) if expires else None,
                   version=int(row["version"]), sealed_tokens=row["tokens"])


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _gone(sid: str) -> Session:
    raise RuntimeError(f"session {sid[:6]} vanished right after it was created")
