"""The daily digest: once a day, at the referrer's `digest_hour` in their time zone, the email
updates gathered since the last digest go out as one mail to the practice (through outreach's
provider mail). The updates are recorded (`update-referrer`, channel email) when the mail server
accepted the mail; a digest the server refused leaves them for the next day's."""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from loop import letters, outbox
from loop.config import LoopConfig, Referrer
from loop.context import Core
from loop.referrers import Referrers
from loop.tables import updates
from referrals.store.work import WorkItem

log = logging.getLogger("refloop.loop.digest")

TICK_KIND = "loop.digest-tick"


class Digests:
    def __init__(self, core: Core, config: LoopConfig, referrers: Referrers) -> None:
        self.core = core
        self.config = config
        self.referrers = referrers

    def handle_tick(self, _item: WorkItem) -> None:
        self.run(self.core.now())

    def run(self, now: datetime, *, force: bool = False) -> list[str]:
        """Hand every due digest to the mail channel; the digest keys handed."""
        handed = []
        for referrer in self.config.referrers:
            if referrer.channel != "email":
                continue
            local = now.astimezone(ZoneInfo(referrer.time_zone))
            if local.hour < referrer.digest_hour and not force:
                continue
            key = self.send(referrer, local.date().isoformat())
            if key:
                handed.append(key)
        return handed

    def send(self, referrer: Referrer, day: str) -> str:
        """One referrer's digest for `day` (once a day, whatever the ticks); its key, or ""
        when there was nothing to say or it was sent already."""
        key = f"loop.digest:{referrer.name}:{day}"
        with self.core.db.write() as conn:
            if conn.execute(sa.select(updates.c.id).where(
                    updates.c.digest.in_([key, f"failed:{key}"]))).first():
                return ""  # today's went out (or the mail server refused it: tomorrow's)
            waiting = self.referrers.waiting(referrer.name, conn)
            if not waiting:
                return ""
            referrals = {r.referral_id: self.core.store.get(r.referral_id, conn)
                         for r in waiting}
            lines = [letters.DigestLine(
                referral=r.referral_id, order=letters.order_of(referrals[r.referral_id]),
                specialty=referrals[r.referral_id].specialty, text=r.text, at=r.created_at)
                for r in waiting]
            letter = letters.digest(referrer.name, day, lines, self.config.sender_name)
            conn.execute(updates.update().where(updates.c.id.in_([r.id for r in waiting]))
                         .values(digest=key))
            outbox.ask_mail(self.core.work, conn, key=key, to=referrer.email,
                            subject=letter.subject, text=letter.text, html=letter.html,
                            purpose="referrer-digest", referral_id="",
                            context={"purpose": "digest", "digest": key})
        log.info("referrer digest handed to mail", extra={"referrer": referrer.name,
                                                          "updates": len(waiting)})
        return key

    def sent(self, key: str) -> None:
        """The mail server took the digest: its updates are delivered."""
        with self.core.db.read() as conn:
            ids = list(conn.execute(sa.select(updates.c.id).where(
                updates.c.digest == key, updates.c.sent_at.is_(None))).scalars())
        rows = [row for row in (self.referrers.get(i) for i in ids) if row is not None]
        self.referrers.mark_sent(rows, "email", key)

    def failed(self, key: str) -> None:
        """The digest was not sent: its updates wait for the next day's."""
        with self.core.db.write() as conn:
            conn.execute(updates.update().where(updates.c.digest == key,
                                                updates.c.sent_at.is_(None))
                         .values(digest=f"failed:{key}"))
