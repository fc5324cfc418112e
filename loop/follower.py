"""The referral listener: inside the transaction that saved a change, decide what the loop does
about it (every consequence is a work item or a row committed with the change, never lost):

- the visit happened with no note linked: the chase ladder starts;
- a note was linked (any path): the ladder stops, the note goes to the referrer;
- a milestone the referrer wants: an update through their channel;
- detection, the visit, the report's receipt: the program clocks.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from loop.chase import Chaser
from loop.clocks import Clocks
from loop.config import LoopConfig
from loop.delivery import Deliveries
from loop.milestones import has_note, milestone_of, notes_added
from loop.referrers import Referrers
from referrals import closed_loop as loop
from referrals.lifecycle import Transition
from referrals.model import Event, Stage
from referrals.store.schema import resources


class Follower:
    def __init__(self, config: LoopConfig, chaser: Chaser, referrers: Referrers,
                 deliveries: Deliveries, clocks: Clocks) -> None:
        self.config = config
        self.chaser = chaser
        self.referrers = referrers
        self.deliveries = deliveries
        self.clocks = clocks

    def on_transition(self, conn: Connection, change: Transition) -> None:
        referral, event = change.referral, change.event
        if event.action in loop.LOOP_ACTIONS:
            if event.action == loop.RECORD_RECEIPT:
                self.clocks.on_receipt(conn, referral, event.at)
            return
        if event.action == "detect":
            self.clocks.on_detect(conn, referral)
        notes = notes_added(event)
        visited = event.action == "complete-visit" and \
            event.from_stage != Stage.VISIT_COMPLETED
        if visited or (notes and event.action == "close-loop" and
                       event.from_stage != Stage.VISIT_COMPLETED):
            # a note before the visit was marked complete: the visit happened too
            self.clocks.on_visit(conn, referral, event.at)
        if visited and not has_note(referral):
            self.chaser.start(conn, referral, event)
        referrer = self.referrers.referrer_of(referral)
        if referrer is not None and referrer.channel != "none":
            when = _appointment_start(conn, event) if event.action in ("schedule", "no-show") \
                else None
            update = milestone_of(referral, event, when=when, zone=referrer.time_zone)
            if update is not None:  # first: "the note is available", then the note itself
                self.referrers.enqueue(conn, referral, event, update)
        if notes:
            self.chaser.stop(conn, referral, event)
            self.deliveries.enqueue(conn, referral, notes)
        elif referral.terminal and event.from_stage != event.to_stage:
            self.chaser.stop(conn, referral, event)


def _appointment_start(conn: Connection, event: Event) -> datetime | None:
    """The start of the Appointment an event linked (scheduled, no-show), from our store."""
    for link in reversed(event.data.get("add_outputs") or []):
        if not isinstance(link, dict) or str(link.get("type", "")).lower() != "appointment":
            continue
        rid = str(link.get("reference", "")).rsplit("/", 1)[-1]
        body = conn.execute(sa.select(resources.c.body).where(
            resources.c.resource_type == "Appointment", resources.c.resource_id == rid,
            resources.c.deleted.is_(False)).order_by(resources.c.updated_at.desc())).scalar()
        start = (body or {}).get("start") if isinstance(body, dict) else None
        if start:
            try:
                return datetime.fromisoformat(str(start).replace("Z", "+00:00"))
            except ValueError:
                return None
    return None


__all__ = ["Follower"]
