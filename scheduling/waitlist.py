"""The waitlist: a patient booked weeks out opts in to earlier dates; when a slot of the same
destination opens (a cancellation on the calendar, a patient who moved), it is offered to the
waiting patients in the order they joined (a few at once); the first to accept gets it (the
booking race decides, as for any booking) and their old appointment is released."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from referrals.store.database import Database
from scheduling.slots import SlotOption, parse_instant
from scheduling.tables import offers, waitlist

OFFERED, ACCEPTED, LOST, EXPIRED = "offered", "accepted", "lost", "expired"


@dataclass(frozen=True)
class Offer:
    id: str
    referral_id: str
    destination: str
    slot_key: str
    slot: dict[str, Any]
    expires_at: datetime
    status: str

    @property
    def start(self) -> datetime:
        found = parse_instant(self.slot.get("start"))
        assert found is not None
        return found


class Waitlist:
    def __init__(self, db: Database, *, offers_per_slot: int = 3, offer_hours: float = 12.0
                 ) -> None:
        self.db = db
        self.offers_per_slot = offers_per_slot
        self.offer_hours = offer_hours

    def join(self, referral_id: str, destination: str, appointment: str,
             current_start: datetime) -> None:
        now = datetime.now(UTC)
        with self.db.write() as c:
            updated = c.execute(waitlist.update().where(waitlist.c.referral_id == referral_id)
                                .values(destination=destination, appointment=appointment,
                                        current_start=current_start, opted_in_at=now,
                                        status="waiting")).rowcount
            if not updated:
                c.execute(waitlist.insert().values(
                    referral_id=referral_id, destination=destination, appointment=appointment,
                    current_start=current_start, opted_in_at=now, status="waiting"))

    def leave(self, referral_id: str) -> None:
        with self.db.write() as c:
            c.execute(waitlist.update().where(waitlist.c.referral_id == referral_id)
                      .values(status="left"))

    def waiting(self, referral_id: str) -> bool:
        with self.db.read() as c:
            return c.execute(sa.select(waitlist.c.status).where(
                waitlist.c.referral_id == referral_id)).scalar() == "waiting"

    def offer(self, conn: Connection, destination: str, option: SlotOption,
              now: datetime | None = None) -> list[Offer]:
        """Offers of a freed slot to the first waiting patients whose visit is later."""
        at = now or datetime.now(UTC)
        if option.start <= at:
            return []
        already = conn.execute(sa.select(offers.c.referral_id).where(
            offers.c.slot_key == option.key, offers.c.status == OFFERED)).scalars().all()
        rows = conn.execute(sa.select(waitlist.c.referral_id).where(
            waitlist.c.destination == destination, waitlist.c.status == "waiting",
            waitlist.c.current_start > option.start)
            .order_by(waitlist.c.opted_in_at).limit(self.offers_per_slot)).scalars().all()
        slot = {"start": option.start.isoformat(),
                "end": option.end.isoformat() if option.end else "",
                "location": option.location, "clinician": option.clinician}
        made = []
        for referral_id in rows:
            if referral_id in already:
                continue
            offer = Offer(uuid.uuid4().hex, referral_id, destination, option.key, slot,
                          at + timedelta(hours=self.offer_hours), OFFERED)
            conn.execute(offers.insert().values(
                id=offer.id, referral_id=referral_id, destination=destination,
                slot_key=option.key, slot=slot, created_at=at, expires_at=offer.expires_at,
                status=OFFERED))
            made.append(offer)
        return made

    def try_get(self, offer_id: str, referral_id: str) -> Offer | None:
        """The offer, only for the referral it was made to."""
        with self.db.read() as c:
            row = c.execute(sa.select(offers).where(
                offers.c.id == offer_id, offers.c.referral_id == referral_id)).mappings().first()
        return _offer(row) if row else None

    def open_offer_for(self, referral_id: str, now: datetime | None = None) -> Offer | None:
        at = now or datetime.now(UTC)
        with self.db.read() as c:
            row = c.execute(sa.select(offers).where(
                offers.c.referral_id == referral_id, offers.c.status == OFFERED,
                offers.c.expires_at > at).order_by(offers.c.created_at.desc())
            ).mappings().first()
        return _offer(row) if row else None

    def decide(self, offer: Offer, accepted: bool) -> None:
        """Accepted: the others of the same slot are lost. Refused or lost: this one only."""
        now = datetime.now(UTC)
        with self.db.write() as c:
            c.execute(offers.update().where(offers.c.id == offer.id)
                      .values(status=ACCEPTED if accepted else LOST, decided_at=now))
            if accepted:
                c.execute(offers.update().where(offers.c.slot_key == offer.slot_key,
                                                offers.c.status == OFFERED)
                          .values(status=LOST, decided_at=now))

    def expire(self, now: datetime | None = None) -> int:
        at = now or datetime.now(UTC)
        with self.db.write() as c:
            return int(c.execute(offers.update().where(offers.c.status == OFFERED,
                                                       offers.c.expires_at <= at)
                                 .values(status=EXPIRED, decided_at=at)).rowcount)


def _offer(row: Any) -> Offer:
    expires = row["expires_at"]
    expires = expires.replace(tzinfo=UTC) if expires.tzinfo is None else expires
    return Offer(row["id"], row["referral_id"], row["destination"], row["slot_key"],
                 dict(row["slot"]), expires, row["status"])
