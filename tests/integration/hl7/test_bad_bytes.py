"""Bytes no store can hold, and failures inside a mapping batch, on SQLite and PostgreSQL.

PostgreSQL refuses what SQLite takes (a NUL in text or in JSON, a value longer than its
column). Such a message must be answered before the ACK where that is cheap, and otherwise be
quarantined at once; it must never stall the messages mapped in the same batch, and a message
that fails in a batch must never be completed without being applied.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from hl7_bridge import index
from hl7_bridge.apply import Applier
from hl7_bridge.header import parse_header
from hl7_bridge.intake import ACCEPT, Frame, Item
from referrals.errors import ConflictError
from referrals.store.schema import inbox, work_items
from referrals.worker import Worker
from refloop.wiring import all_handlers

from .conftest import Feed


def ref(control: str, key: str, note: str = "Please assess.") -> bytes:
    """A plain (original mode) REF^I12 keyed on RF1-6 `key`."""
    return (f"MSH|^~\\&|GPSYS|GPCLINIC|HUB|HUB|20240101120000||REF^I12^REF_I12|{control}|P|"
            f"2.5.1\rRF1|A|R||||{key}\rPID|1||X-{control}^^^GP^MR||Doe^Jane||19700101|F\r"
            f"NTE|1||{note}\r").encode()


def hl7_worker(feed: Feed) -> Worker:
    """The worker as `refloop serve` runs it but taking one item per round, so the mapping
    batch claims the rest of its items itself (as with more than a worker batch queued)."""
    handlers = {k: v for k, v in all_handlers(feed.services).items() if k.startswith("hl7.")}
    return Worker(feed.services.work, handlers, name="w1", batch=1)


def statuses(feed: Feed) -> list[str]:
    with feed.services.db.read() as conn:
        return list(conn.execute(sa.select(inbox.c.status).order_by(inbox.c.id)).scalars())


def referral_keys(feed: Feed) -> set[str]:
    return {r.source_key.rsplit("|", 1)[1]
            for r in feed.services.store.list(limit=100)}


def stored_before_the_check(feed: Feed, raw: bytes) -> None:
    """Store `raw` as accepted, as a listener without today's checks did (an upgrade finds
    such messages in the inbox)."""
    header = parse_header(raw)
    feed.adapter.intake.store([Frame([Item(raw, header, header.sender, ACCEPT)])])


def test_a_message_failing_again_in_the_one_by_one_pass_is_retried_not_completed(
        feed: Feed, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch stops at B2 and applies it alone, where it fails once more (say the database
    was briefly unavailable): its work item goes back to the queue and B2 is applied on the
    retry. It must never be completed as if applied. B3 waits for B2 (its sender's order)."""
    feed.services.work.base_backoff = 0.0  # the retry is due at once
    monkeypatch.setattr("hl7_bridge.apply.WAIT_SECONDS", 0.0)  # and B3's wait behind B2
    failures = {"B2": 2}
    real = Applier._apply

    def flaky(self: Applier, lookups: Any, prepared: Any) -> Any:
        control_id = prepared.message.control_id
        if failures.get(control_id, 0) > 0:
            failures[control_id] -= 1
            raise RuntimeError("the database went away for a moment")
        return real(self, lookups, prepared)

    monkeypatch.setattr(Applier, "_apply", flaky)
    for n in (1, 2, 3):
        assert b"MSA|AA|B%d" % n in (feed.send(ref(f"B{n}", f"R-{n}")) or b"")
    worker = hl7_worker(feed)
    worker.drain()
    assert statuses(feed) == ["processed"] * 3
    assert {f"R-{n}^GPSYS" for n in (1, 2, 3)} <= referral_keys(feed)
    assert feed.services.work.counts() == {"done": 3}


def test_a_batch_that_fails_as_a_whole_leaves_no_item_leased(
        feed: Feed, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch's write fails as a whole (say it lost a race at flush: ConflictError): the
    items the batch claimed beyond the worker's own run one by one at once, in order, like the
    worker's own; none waits in its lease until it expires."""
    real = Applier._run

    def lost_race(self: Applier, ready: list[Any], owner: str, complete: bool) -> None:
        if len(ready) > 1:
            raise ConflictError("another worker stored the same referral first")
        real(self, ready, owner, complete)

    monkeypatch.setattr(Applier, "_run", lost_race)
    for n in (1, 2, 3):
        assert b"MSA|AA|C%d" % n in (feed.send(ref(f"C{n}", f"R-{n}")) or b"")
    assert hl7_worker(feed).run_once() == 1  # one round: its own item, the batch claims two
    assert statuses(feed) == ["processed"] * 3
    with feed.services.db.read() as conn:
        assert conn.execute(sa.select(work_items.c.status, work_items.c.lease_owner,
                                      work_items.c.attempts)).all() == [("done", None, 1)] * 3


@pytest.mark.parametrize(("field", "raw", "location"), [
    ("RF1-6", ref("N1", "R-\x00-1"), b"RF1^1^6"),
    ("NTE-3", ref("N2", "R-2", note="Pal\x00pitations"), b"NTE^1^3"),
], ids=["RF1-6", "NTE-3"])
def test_a_nul_byte_is_answered_ae_and_kept(feed: Feed, field: str, raw: bytes,
                                            location: bytes) -> None:
    """No store can be relied on to hold a NUL (PostgreSQL text and jsonb cannot): AE with
    ERR 102 naming where it is, kept in quarantine, never queued for mapping."""
    ack = feed.send(raw) or b""
    assert b"MSA|AE|" in ack and b"ERR||" + location + b"|102^" in ack, ack
    assert statuses(feed) == ["rejected"]
    (entry,) = feed.services.quarantine.list()
    assert "NUL" in entry.reason and field in entry.reason
    assert feed.services.work.counts() == {}


def test_a_referral_identifier_too_long_to_store_is_answered_ae(feed: Feed) -> None:
    ack = feed.send(ref("L1", "R" * 600)) or b""
    assert b"MSA|AE|L1" in ack and b"ERR||RF1^1^6|104^" in ack, ack
    assert statuses(feed) == ["rejected"]
    assert feed.services.work.counts() == {}
    # an identifier that fits, with a namespace that makes its key too long, is refused when
    # mapped (at once, not after every retry) on both databases
    long_namespace = ref("L2", "R-2^" + "N" * 500)
    assert b"MSA|AA|L2" in (feed.send(long_namespace) or b"")
    hl7_worker(feed).drain()
    assert statuses(feed) == ["rejected", "quarantined"]
    with feed.services.db.read() as conn:
        assert conn.execute(sa.select(work_items.c.status, work_items.c.attempts)).all() == \
            [("quarantined", 1)]


def test_messages_stored_with_nul_bytes_before_the_check_are_mapped(feed: Feed) -> None:
    """Messages stored before the ACK path refused NUL bytes (or NULs written as the escape
    \\X00\\) map the same on both databases, the NULs left out, and with the good messages of
    their batch."""
    stored_before_the_check(feed, ref("S1", "R-1"))
    stored_before_the_check(feed, ref("S2", "R-\x002", note="Pal\x00pitations"))
    stored_before_the_check(feed, ref("S3", "R-3", note="Pal\\X00\\pitations"))
    stored_before_the_check(feed, ref("S4", "R-4"))
    hl7_worker(feed).drain()
    assert statuses(feed) == ["processed"] * 4
    assert {"R-1^GPSYS", "R-2^GPSYS", "R-3^GPSYS", "R-4^GPSYS"} <= referral_keys(feed)
    assert feed.services.work.counts() == {"done": 4}


def test_a_value_the_store_refuses_stalls_nothing_and_is_quarantined_at_once(
        feed: Feed, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch's bulk reads fail because of one message's key (the database refuses the
    value: a DataError). The other messages of the batch are applied in the same round; the
    bad one is quarantined at its first attempt, with its inbox row, not retried for minutes."""
    real = index.referral_ids_by_key

    def refusing(conn: Any, keys: Any) -> Any:
        if any("POISON" in key for key in keys):
            raise sa.exc.DataError("SELECT ...", {}, Exception("value refused by the database"))
        return real(conn, keys)

    monkeypatch.setattr(index, "referral_ids_by_key", refusing)
    for n, key in ((1, "R-1"), (2, "POISON"), (3, "R-3"), (4, "R-4")):
        assert b"MSA|AA|P%d" % n in (feed.send(ref(f"P{n}", key)) or b"")
    hl7_worker(feed).drain()
    assert statuses(feed) == ["processed", "quarantined", "processed", "processed"]
    assert {"R-1^GPSYS", "R-3^GPSYS", "R-4^GPSYS"} <= referral_keys(feed)
    with feed.services.db.read() as conn:
        rows = conn.execute(sa.select(work_items.c.status, work_items.c.attempts)
                            .order_by(work_items.c.id)).all()
    assert [tuple(r) for r in rows] == [("done", 1), ("quarantined", 1), ("done", 1),
                                        ("done", 1)]
    (entry,) = feed.services.quarantine.list()
    assert "refused" in entry.reason
