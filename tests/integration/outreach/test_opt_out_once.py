"""Two STOP (or START) replies handled at the same moment by two workers: the patient gets one
"you are unsubscribed" (or "you will receive messages again") text, not two. On PostgreSQL the
two consent transactions are forced to overlap; SQLite's writers take the database's write lock
at BEGIN, so there the two threads run at once and the second waits for the first's commit."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa
from outreach_harness import NY_MOBILE, Harness

from outreach import replies
from referrals.store.work import WorkItem
from refloop.wiring import all_handlers

CONFIRMED = "you will get no more texts"
RESUMED = "you will receive messages again"


def lock_waiters(h: Harness) -> int:
    """Backends of this database waiting for a lock (the other STOP's transaction)."""
    with h.services.db.read() as c:
        return int(c.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")).scalar_one())


class Overlap:
    """Forces the interleaving that confirmed twice: the first STOP to read the address's
    consent waits there until the second has read it too (or waits for a lock the first
    holds); the second, having read it, waits until the first has committed and answered."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.seen: list[int] = []
        self.turn = threading.Condition()
        self.first_done = threading.Event()
        self.read = replies.consent_state

    def __call__(self, events: Any) -> Any:
        state = self.read(events)
        me = threading.get_ident()
        with self.turn:
            if me in self.seen:
                return state
            self.seen.append(me)
            self.turn.notify_all()
            first = len(self.seen) == 1
            while first and len(self.seen) < 2 and not lock_waiters(self.h):
                self.turn.wait(timeout=0.05)
        if not first:
            self.first_done.wait(timeout=30)
        return state


def run_together(h: Harness, items: list[WorkItem], overlap: Overlap | None = None) -> None:
    handle = all_handlers(h.services)["outreach.inbound"]
    errors: list[BaseException] = []

    def run(item: WorkItem) -> None:
        try:
            handle(item)
            h.services.work.complete(item, item.lease_owner or "")
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            if overlap is not None:
                overlap.first_done.set()
    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_simultaneous_stops_are_confirmed_once(harness: Harness,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    h = harness
    h.patient("p-stop")
    h.referral("p-stop")
    h.settle()
    for _ in range(2):
        assert h.twilio.reply(NY_MOBILE, "STOP") == 200
    items = [h.services.work.claim(f"worker-{n}", limit=1, kinds=["outreach.inbound"])[0]
             for n in range(2)]
    overlap = Overlap(h)
    monkeypatch.setattr(replies, "consent_state", overlap)
    run_together(h, items, overlap)
    h.settle()
    confirmations = [m.body for m in h.twilio.messages(NY_MOBILE) if CONFIRMED in m.body]
    assert len(confirmations) == 1, confirmations


def test_two_simultaneous_starts_are_confirmed_once(harness: Harness,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    h = harness
    h.patient("p-start")
    h.referral("p-start")
    h.settle()
    assert h.twilio.reply(NY_MOBILE, "STOP") == 200
    h.settle()
    for _ in range(2):
        assert h.twilio.reply(NY_MOBILE, "START") == 200
    items = [h.services.work.claim(f"worker-{n}", limit=1, kinds=["outreach.inbound"])[0]
             for n in range(2)]
    overlap = Overlap(h) if h.services.db.dialect == "postgresql" else None
    if overlap is not None:
        monkeypatch.setattr(replies, "consent_state", overlap)
    run_together(h, items, overlap)
    h.settle()
    texts = [m.body for m in h.twilio.messages(NY_MOBILE)]
    assert len([t for t in texts if RESUMED in t]) == 1, texts
    assert len([t for t in texts if CONFIRMED in t]) == 1, texts
