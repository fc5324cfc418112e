"""Each sender's messages are applied in the order they were stored, whichever worker maps them.

A worker may claim a sender's later messages while earlier ones are still leased elsewhere: by
another worker thread or node, or by a worker that died holding them (they come back when its
lease expires). Applied first, a later REF^I13 would be overwritten by the older one applied
after it, and an ADT^A08 by the REF^I12 it followed. So a message waits (its work item is
postponed, no attempt spent) while an earlier message of its sender, outside its batch, is
stored and not yet mapped and its work item is still pending. Earlier messages that are parked,
quarantined, rejected or whose work item was quarantined hold nothing up.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hl7_bridge.intake import CHANNEL
from referrals.store.inbox import RECEIVED
from referrals.store.schema import inbox, work_items
from referrals.store.work import PENDING

#: how long a message waits before it looks again (a dead worker's lease lasts lease_seconds)
WAIT_SECONDS = 2.0


def first_waiting(conn: Connection, batch: Sequence[tuple[int, str]]) -> dict[str, int]:
    """For each sender of `batch` ((inbox id, sender) pairs), the first of its messages stored
    before the batch's last one, outside the batch, that still waits to be mapped."""
    if not batch:
        return {}
    ids = [inbox_id for inbox_id, _ in batch]
    rows = conn.execute(sa.select(inbox.c.id, inbox.c.sender).where(
        inbox.c.status == RECEIVED, inbox.c.id < max(ids), inbox.c.channel == CHANNEL,
        inbox.c.sender.in_({sender for _, sender in batch}), inbox.c.id.not_in(ids))).all()
    if not rows:
        return {}
    by_key = {f"inbox:{row.id}": (int(row.id), str(row.sender)) for row in rows}
    live = conn.execute(sa.select(work_items.c.idempotency_key).where(
        work_items.c.idempotency_key.in_(list(by_key)), work_items.c.status == PENDING))
    first: dict[str, int] = {}
    for key in live.scalars():
        inbox_id, sender = by_key[key]
        first[sender] = min(first.get(sender, inbox_id), inbox_id)
    return first


def held_back(first: dict[str, int], inbox_id: int, sender: str) -> bool:
    """Whether message `inbox_id` of `sender` must wait for an earlier one (see first_waiting)."""
    return inbox_id > first.get(sender, inbox_id)
