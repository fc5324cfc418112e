"""Many referral changes in one transaction, for batch handlers (a worker applying a group of
inbound messages): each referral is read once, every command goes through the same lifecycle
rules (`start`, `transition`) in memory, and the rows, events and listeners are written
together at `flush`, with one statement per kind of write instead of several per change.

What stays as with `ReferralService`:
- `open` is idempotent on the source key (a key opened earlier in the batch, or stored, gives
  the existing referral);
- every change appends its event, with the referral as that change left it;
- the listeners see every change, in order, inside the same transaction.

What a caller must know:
- the writes happen at `flush`; listeners run there too, after the rows are written, so a
  listener that reads the store sees the batch's final state;
- on PostgreSQL the referrals a batch reads are locked (FOR UPDATE) until it commits; on
  SQLite the write transaction already excludes other writers. A concurrent insert of the same
  source key, or a lost update, raises ConflictError at `flush`: roll back and retry (the
  work queue's rules do).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.engine import Connection

from referrals.errors import NotFound
from referrals.lifecycle import Transition, start, transition
from referrals.model import Command, Referral
from referrals.service import ReferralService


class ReferralBatch:
    def __init__(self, service: ReferralService, conn: Connection) -> None:
        self.service = service
        self.store = service.store
        self.conn = conn
        #: referral id -> its state now (stored, or changed in this batch)
        self.current: dict[str, Referral] = {}
        #: referral id -> the version stored in the database (0: not stored yet)
        self.stored_version: dict[str, int] = {}
        #: ids looked up and not found
        self.missing: set[str] = set()
        #: source key -> referral id, or None when known to be absent
        self.sources: dict[str, str | None] = {}
        self.changes: list[Transition] = []

    # reading -------------------------------------------------------------------------------

    def load(self, referral_ids: Iterable[str]) -> None:
        """Read (and on PostgreSQL lock) the referrals not read yet, in one query."""
        wanted = {i for i in referral_ids if i not in self.current and i not in self.missing}
        found = self.store.get_many(wanted, self.conn, lock=True)
        for referral_id in wanted:
            if referral_id in found:
                self.current[referral_id] = found[referral_id]
                self.stored_version[referral_id] = found[referral_id].version
            else:
                self.missing.add(referral_id)

    def load_sources(self, source_keys: Iterable[str]) -> None:
        """Which of `source_keys` are stored, in one query (before `open`s)."""
        wanted = {k for k in source_keys if k not in self.sources}
        found = self.store.ids_by_source(wanted, self.conn)
        for key in wanted:
            self.sources[key] = found.get(key)

    def try_get(self, referral_id: str) -> Referral | None:
        self.load([referral_id])
        return self.current.get(referral_id)

    def get(self, referral_id: str) -> Referral:
        found = self.try_get(referral_id)
        if found is None:
            raise NotFound(f"no referral {referral_id}")
        return found

    # changing -----------------------------------------------------------------------------

    def open(self, draft: Referral, command: Command) -> tuple[Referral, bool]:
        """`ReferralService.open` in memory: (referral, created)."""
        self.load_sources([draft.source_key])
        known = self.sources[draft.source_key]
        if known is not None:
            return self.get(known), False
        change = start(draft, command)
        referral = change.referral
        self.current[referral.id] = referral
        self.stored_version[referral.id] = 0
        self.missing.discard(referral.id)
        self.sources[draft.source_key] = referral.id
        self.changes.append(change)
        return referral, True

    def act(self, referral_id: str, command: Command) -> Referral:
        """`ReferralService.act` in memory (raises IllegalTransition as it does)."""
        change = transition(self.get(referral_id), command)
        self.current[referral_id] = change.referral
        self.changes.append(change)
        return change.referral

    # writing -------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write every change since the last flush, then run the listeners on them, in order.
        Afterwards the referrals are read again when next asked for (a listener may have
        changed them)."""
        if not self.changes:
            return
        touched = list(dict.fromkeys(c.referral.id for c in self.changes))
        new = [self.current[i] for i in touched if self.stored_version[i] == 0]
        changed = [(self.current[i], self.stored_version[i]) for i in touched
                   if self.stored_version[i] != 0]
        events = [(c.referral, c.event) for c in self.changes]
        self.store.write_many(new, changed, events, self.conn)
        changes, self.changes = self.changes, []
        for change in changes:
            self.service.notify(self.conn, change)
        for referral_id in touched:
            self.current.pop(referral_id, None)
            self.stored_version.pop(referral_id, None)
