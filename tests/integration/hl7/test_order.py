"""A sender's messages are applied in the order they were stored even when a worker claims later
ones while earlier ones are leased elsewhere (another worker, or one that died), on SQLite and
PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

from referrals.store.schema import inbox, work_items
from referrals.worker import Worker
from refloop.wiring import all_handlers

from .conftest import Feed, fixture

SOURCE = "hl7|GPSYS^GPCLINIC|REF-2024-0042^GPCLINIC"
I13 = fixture("authored__REF_I13_modify_referral.hl7")  # RF1-2 A (asap), MSH-10 GP000102
I13_STAT = I13.replace(b"|GP000102|", b"|GP000101S|").replace(b"A^ASAP^HL70280",
                                                              b"S^Stat^HL70280")


def _worker(feed: Feed) -> Worker:
    handlers = {k: v for k, v in all_handlers(feed.services).items() if k.startswith("hl7.")}
    return Worker(feed.services.work, handlers, name="live")


def _statuses(feed: Feed) -> list[str]:
    with feed.services.db.read() as conn:
        return list(conn.execute(sa.select(inbox.c.status).order_by(inbox.c.id)).scalars())


def _leases_expire(feed: Feed) -> None:
    """The dead worker's lease runs out and the postponed item falls due (no waiting)."""
    with feed.services.db.write() as conn:
        conn.execute(work_items.update().where(work_items.c.status == "pending").values(
            lease_owner=None, lease_expires=None, run_at=sa.func.current_timestamp()))


def test_a_later_update_waits_while_an_earlier_one_is_leased_elsewhere(feed: Feed) -> None:
    feed.send(fixture("authored__REF_I12_new_referral_utf8.hl7"))
    assert feed.drain() == 1
    feed.send(I13_STAT)  # first: priority stat
    feed.send(I13)       # then: priority asap
    (taken,) = feed.services.work.claim("dead", limit=1, kinds=["hl7.message"])
    assert _worker(feed).run_once() == 1  # claims the second I13 only: it must wait
    assert _statuses(feed) == ["processed", "received", "received"]
    with feed.services.db.read() as conn:
        waiting = conn.execute(sa.select(work_items).where(
            work_items.c.id != taken.id, work_items.c.status == "pending")).one()
    assert waiting.lease_owner is None and waiting.attempts == 0
    assert "earlier message" in waiting.last_error
    _leases_expire(feed)
    assert feed.drain() == 2
    found = feed.services.store.try_get_by_source(SOURCE)
    assert found is not None and found.priority == "asap"
    assert [e.source_message for e in feed.services.store.events(found.id)][1:] == \
        ["GP000101S", "GP000102"]


def test_an_earlier_message_given_up_on_holds_nothing_up(feed: Feed) -> None:
    """An earlier message whose work item went to quarantine (its inbox row still says received)
    does not hold its sender's later messages for ever."""
    feed.send(I13_STAT)
    feed.send(fixture("authored__REF_I12_new_referral_utf8.hl7"))
    with feed.services.db.write() as conn:
        conn.execute(work_items.update().where(work_items.c.id == 1).values(
            status="quarantined"))
    assert feed.drain() == 1
    assert _statuses(feed) == ["received", "processed"]


def test_one_by_one_a_later_message_is_postponed_too(feed: Feed) -> None:
    """The one-by-one path (after a batch stopped at a bad message) holds it back the same way."""
    feed.send(I13_STAT)
    feed.send(I13)
    feed.services.work.claim("dead", limit=1, kinds=["hl7.message"])
    (later,) = feed.services.work.claim("live", limit=1, kinds=["hl7.message"])
    assert _worker(feed).process(later) == "postponed"
    assert _statuses(feed) == ["received", "received"]
