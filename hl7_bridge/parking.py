"""Parked messages: listed with their age and expiry, and moved to quarantine when the
referral they wait for has not arrived within `[hl7] parked_expiry_hours`.

A message parks when it names a referral we do not hold yet (an SIU before its REF); the
referral's arrival wakes it (apply.py). When it never comes, waiting for ever hides the
problem: after the expiry the message goes to quarantine (`refloop quarantine list`, kind
`hl7-parked-expired`), an alert is logged (WARNING `HL7 parked message expired`, no patient
data), and in enhanced mode the sender gets an application ACK AE when MSH-16 asks for one.
The `hl7.expire-parked` timer runs this on every node; the first to take a message wins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hl7_bridge.tables import parked
from referrals.store.schema import inbox, to_utc

log = logging.getLogger("refloop.hl7.parking")

WORK_KIND = "hl7.expire-parked"
QUARANTINE_KIND = "hl7-parked-expired"
#: how often the timer looks for expired messages
EVERY_SECONDS = 300.0

#: (connection, raw message, problem) -> tell the sender (an application ACK AE when asked)
TellSender = Callable[[Connection, bytes, str], None]


@dataclass
class Parking:
    services: Any
    expiry: timedelta
    tell_sender: TellSender

    def expire(self, now: datetime | None = None) -> int:
        """Quarantine the messages parked for longer than the expiry; how many there were."""
        cutoff = (now or datetime.now(UTC)) - self.expiry
        expired = 0
        with self.services.db.write() as conn:
            for inbox_id, (parked_at, waiting_for) in _by_message(conn, cutoff).items():
                self._quarantine(conn, inbox_id, parked_at, waiting_for)
                expired += 1
        return expired

    def _quarantine(self, conn: Connection, inbox_id: int, parked_at: datetime,
                    waiting_for: str) -> None:
        conn.execute(parked.delete().where(parked.c.inbox_id == inbox_id))
        message = self.services.inbox.get(inbox_id, conn=conn)
        hours = self.expiry.total_seconds() / 3600
        reason = (f"parked since {parked_at:%Y-%m-%d %H:%M} UTC waiting for "
                  f"{waiting_for.removeprefix('referral:')}, which never arrived within "
                  f"{hours:g} h; check the key with the sender, then resend both messages")
        self.services.inbox.mark(inbox_id, "quarantined", reason, conn=conn)
        self.services.quarantine.put(origin="inbox", kind=QUARANTINE_KIND, reason=reason,
                                     original=message.body,
                                     content_type=message.content_type, inbox_id=inbox_id,
                                     conn=conn)
        self.tell_sender(conn, message.body, f"the referral it names never arrived "
                                             f"({waiting_for.removeprefix('referral:')})")
        log.warning("HL7 parked message expired", extra={
            "inbox_id": inbox_id, "sender": message.sender, "waiting_for": waiting_for,
            "control_id": message.headers.get("control_id", ""),
            "parked_hours": round((datetime.now(UTC) - parked_at).total_seconds() / 3600, 1)})

    def listing(self) -> list[dict[str, Any]]:
        """Each parked message (one row per message): inbox id, sender, MSH-10, what it waits
        for, when it parked and when it expires."""
        with self.services.db.read() as conn:
            messages = _by_message(conn)
            senders = {int(r.id): r for r in conn.execute(
                sa.select(inbox.c.id, inbox.c.sender, inbox.c.headers)
                .where(inbox.c.id.in_(list(messages))))} if messages else {}
        return [{"inbox_id": inbox_id, "sender": senders[inbox_id].sender,
                 "control_id": (senders[inbox_id].headers or {}).get("control_id", ""),
                 "waiting_for": waiting_for, "parked_at": at.isoformat(),
                 "expires_at": (at + self.expiry).isoformat()}
                for inbox_id, (at, waiting_for) in messages.items()]


def _by_message(conn: Connection, cutoff: datetime | None = None
                ) -> dict[int, tuple[datetime, str]]:
    """inbox id -> (parked at, the key it waits for), in arrival order. A message parked under
    several spellings of one key (keys.py) has one row per spelling; the first is its primary
    key."""
    query = sa.select(parked.c.inbox_id, parked.c.parked_at, parked.c.waiting_for) \
        .order_by(parked.c.inbox_id, parked.c.id)
    if cutoff is not None:
        query = query.where(parked.c.parked_at <= cutoff)
    found: dict[int, tuple[datetime, str]] = {}
    for inbox_id, at, waiting_for in conn.execute(query):
        found.setdefault(int(inbox_id), (to_utc(at), str(waiting_for)))
    return found
