"""Keeping the referring provider informed: each milestone (loop/milestones.py) a referrer wants
becomes a row of `loop_updates`, sent through the referrer's channel:

- `fhir`: a Communication on the referrer's EHR (and, with `task_updates`, the referral Task
  kept current there: BSeR/360X);
- `v2`: an RRI^I12 to the referrer's v2 system, through the bridge; milestones the bridge itself
  already reports to that partner about its own referrals (its `outbound.events`) are left to it;
- `email`: gathered for the daily digest (loop/digest.py).

An update is recorded as an `update-referrer` event once it reached the referrer's system (a
2xx, an AA/CA) or was handed to the mail server in the digest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from loop import fhir, outbox
from loop.client import FhirClient
from loop.config import LoopConfig, Referrer
from loop.context import LOOP, Core
from loop.fhir import source_base
from loop.milestones import STAGE_OF, Update
from loop.tables import updates
from referrals import closed_loop as loop
from referrals.model import Command, Event, Referral, source_server
from referrals.store.work import WorkItem

log = logging.getLogger("refloop.loop.referrers")

UPDATE_KIND = "loop.update"
#: built once (bound parameters): compiled once and cached
_INSERT = updates.insert().returning(updates.c.id)

ClientFor = Callable[[str], FhirClient]


@dataclass(frozen=True)
class Pending:
    id: int
    key: str
    referral_id: str
    referrer: str
    milestone: str
    channel: str
    text: str
    about_seq: int
    created_at: datetime
    sent_at: datetime | None
    digest: str


class Referrers:
    def __init__(self, core: Core, config: LoopConfig, client_for: ClientFor) -> None:
        self.core = core
        self.config = config
        self.client_for = client_for

    def referrer_of(self, referral: Referral) -> Referrer | None:
        return self.config.referrer_for(referral.requester, source_server(referral.source_key))

    # -- deciding (inside the referral's transaction) ---------------------------------------

    def enqueue(self, conn: Connection, referral: Referral, event: Event, update: Update
                ) -> None:
        referrer = self.referrer_of(referral)
        if referrer is None or referrer.channel == "none" or \
                update.milestone not in referrer.milestones:
            return
        if referrer.channel == "v2" and self._bridge_reports(referral, referrer, update):
            return
        key = f"{referral.id}:{event.seq}:{referrer.name}"
        update_id = int(conn.execute(_INSERT, {
            "key": key, "referral_id": referral.id, "referrer": referrer.name,
            "milestone": update.milestone, "channel": referrer.channel, "text": update.text,
            "about_seq": event.seq, "created_at": self.core.now()}).scalar_one())
        if referrer.channel in ("fhir", "v2"):
            self.core.work.enqueue(UPDATE_KIND, {"update_id": update_id, "status": update.status},
                                   key=f"{UPDATE_KIND}:{key}", conn=conn)

    def _bridge_reports(self, referral: Referral, referrer: Referrer, update: Update) -> bool:
        """The referral came over v2 from this partner, whose own outbound messages already
        report this stage (docs/hl7v2.md): do not tell them twice."""
        parts = referral.source_key.split("|", 2)
        came_from = parts[1] if len(parts) == 3 and parts[0] == "hl7" else ""
        return came_from == referrer.v2_partner and \
            STAGE_OF[update.milestone] in self.core.v2_stage_events(referrer.v2_partner)

    # -- sending (work handlers) ------------------------------------------------------------

    def handle_update(self, item: WorkItem) -> None:
        row = self.get(int(item.payload["update_id"]))
        if row is None or row.sent_at is not None:
            return
        referral = self.core.store.get(row.referral_id)
        referrer = self.config.referrer(row.referrer)
        if referrer is None:
            log.warning("referrer no longer configured; update not sent",
                        extra={"referral_id": referral.id, "referrer": row.referrer})
            return
        if row.channel == "v2":
            with self.core.db.write() as conn:
                outbox.ask_v2(self.core.work, conn, key=f"loop.v2:{row.key}",
                              partner=referrer.v2_partner, message="RRI^I12",
                              referral_id=referral.id,
                              status=str(item.payload.get("status") or "A"), text=row.text,
                              context={"purpose": "update", "update_id": row.id})
            return
        target = referrer.fhir_base or source_base(referral)
        if not target:
            log.warning("no FHIR server to tell the referrer on",
                        extra={"referral_id": referral.id, "referrer": referrer.name})
            return
        client = self.client_for(target)
        update = Update(row.milestone, row.text, "")
        client.create_once(
            fhir.communication(referral, update, target, seq=row.about_seq,
                               sent=self.core.now(), sender=self.config.sender_name),
            f"{fhir.UPDATE_SYSTEM}|{referral.id}:{row.about_seq}")
        if referrer.task_updates:
            client.update_where(fhir.referral_task(referral, target),
                                f"{fhir.REFERRAL_SYSTEM}|{referral.id}")
        self.mark_sent([row], "fhir")

    def mark_sent(self, rows: list[Pending], channel: str, digest: str = "") -> None:
        """Record the updates as delivered: the rows and one update-referrer event each."""
        now = self.core.now()
        with self.core.db.write() as conn:
            for row in rows:
                done = conn.execute(updates.update().where(
                    updates.c.id == row.id, updates.c.sent_at.is_(None)).values(
                    sent_at=now, digest=digest or row.digest)).rowcount
                if not done:
                    continue
                details: dict[str, Any] = {"milestone": row.milestone, "channel": channel,
                                           "about_seq": row.about_seq}
                if digest:
                    details["digest"] = digest
                self.core.referrals.act(row.referral_id, Command(
                    loop.UPDATE_REFERRER, actor=LOOP, at=now, source="loop",
                    changes={"details": details}), conn=conn)

    def get(self, update_id: int) -> Pending | None:
        with self.core.db.read() as c:
            row = c.execute(sa.select(updates).where(updates.c.id == update_id)
                            ).mappings().first()
        return _pending(row) if row else None

    def of_referral(self, referral_id: str) -> list[Pending]:
        with self.core.db.read() as c:
            rows = c.execute(sa.select(updates).where(updates.c.referral_id == referral_id)
                             .order_by(updates.c.id)).mappings().all()
        return [_pending(r) for r in rows]

    def waiting(self, referrer: str, conn: Connection) -> list[Pending]:
        """Email updates of `referrer` not yet in a digest (or in one that was not sent)."""
        rows = conn.execute(sa.select(updates).where(
            updates.c.channel == "email", updates.c.referrer == referrer,
            updates.c.sent_at.is_(None),
            sa.or_(updates.c.digest == "", updates.c.digest.startswith("failed:")))
            .order_by(updates.c.id)).mappings().all()
        return [_pending(r) for r in rows]


def _pending(row: sa.RowMapping) -> Pending:
    return Pending(id=int(row["id"]), key=row["key"], referral_id=row["referral_id"],
                   referrer=row["referrer"], milestone=row["milestone"], channel=row["channel"],
                   text=row["text"], about_seq=int(row["about_seq"]),
                   created_at=row["created_at"], sent_at=row["sent_at"], digest=row["digest"])
