"""The referral application service: load, transition, save, with listeners in the same commit.

Adapters call this; it is the one way a referral changes. Listeners registered by `refloop/`
run inside the saving transaction, so outbox work (write the Task to the EHR, submit PAS...) is
decided at commit and never lost.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection

from referrals.errors import ConflictError, IllegalTransition
from referrals.lifecycle import Transition, start, transition
from referrals.model import Command, Referral
from referrals.store.database import Database
from referrals.store.referrals import ReferralStore

Listener = Callable[[Connection, Transition], None]


@dataclass
class ReferralService:
    db: Database
    store: ReferralStore
    listeners: list[Listener] = field(default_factory=list)
    retries: int = 5

    def open(self, draft: Referral, command: Command, conn: Connection | None = None
             ) -> tuple[Referral, bool]:
        """Create the referral for `draft.source_key` unless it exists; (referral, created).

        One conditional INSERT decides (ON CONFLICT DO NOTHING, which waits for a concurrent
        insert of the same key); the existing referral is read only when it was not ours.
        """
        try:
            change = start(draft, command)
        except IllegalTransition:
            existing = self.store.try_get_by_source(draft.source_key, conn)
            if existing is None:
                raise
            return existing, False
        with self.db.using(conn) as c:
            if self.store.try_insert(change, c):
                self._notify(c, change)
                return change.referral, True
            found = self.store.try_get_by_source(draft.source_key, c)
        if found is None:
            raise ConflictError(f"referral {draft.source_key}", 0, 1)
        return found, False

    def act(self, referral_id: str, command: Command, *, expected_version: int | None = None,
            conn: Connection | None = None) -> Referral:
        """Apply `command`; with `expected_version`, a concurrent change raises ConflictError.

        Without it, a lost race reloads and re-applies (the lifecycle re-checks the rules). The
        row is locked while the command is applied (SELECT ... FOR UPDATE on PostgreSQL; SQLite's
        write transaction already excludes other writers), so concurrent writers queue up.
        """
        for attempt in range(self.retries):
            try:
                with self.db.using(conn) as c:
                    current = self.store.get(referral_id, c, lock=True)
                    if expected_version is not None and current.version != expected_version:
                        raise ConflictError(f"referral {referral_id}", expected_version,
                                            current.version)
                    change = transition(current, command)
                    self.store.save(change, c)
                    self._notify(c, change)
                return change.referral
            except ConflictError:
                if expected_version is not None or conn is not None or \
                        attempt == self.retries - 1:
                    raise
                time.sleep(random.uniform(0, 0.01 * 2 ** attempt))
        raise AssertionError("unreachable")

    def _notify(self, conn: Connection, change: Transition) -> None:
        self.notify(conn, change)

    def notify(self, conn: Connection, change: Transition) -> None:
        """Run the listeners on a change saved in `conn`'s transaction (also referrals/batch.py)."""
        for listener in self.listeners:
            listener(conn, change)
