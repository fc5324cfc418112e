"""The loop adapter's objects for one process, and its work handlers (refloop/wiring/loop.py
registers them)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from loop.chase import OUTCOME_KIND, POLL_KIND, STEP_KIND, WITHDRAW_KIND, Chaser
from loop.client import FhirClient
from loop.clocks import CLOCK_KIND, Clocks
from loop.config import LoopConfig
from loop.context import Core
from loop.delivery import DELIVER_KIND, Deliveries
from loop.digest import TICK_KIND, Digests
from loop.follower import Follower
from loop.links import LinkStore
from loop.notes import NOTIFICATION_KIND, Notes
from loop.outbox import MAIL_RESULT, V2_ACK
from loop.referrers import UPDATE_KIND, Referrers
from referrals.store.work import WorkItem
from referrals.worker import Handler

log = logging.getLogger("refloop.loop")


class LoopAdapter:
    def __init__(self, core: Core, config: LoopConfig) -> None:
        self.core = core
        self.config = config
        self._clients: dict[str, FhirClient] = {}
        self.links = LinkStore(core.db, days=config.link_days, per_link=config.link_attempts,
                               per_source=config.source_attempts,
                               session_minutes=config.session_minutes)
        self.chaser = Chaser(core, config, self.links, self.client)
        self.notes = Notes(core, self.client, self.chaser.by_task)
        self.chaser.apply_document = self.notes.apply_document
        self.referrers = Referrers(core, config, self.client)
        self.deliveries = Deliveries(core, config, self.links, self.client)
        self.digests = Digests(core, config, self.referrers)
        self.clocks = Clocks(core, config, self.client)
        self.follower = Follower(config, self.chaser, self.referrers, self.deliveries,
                                 self.clocks)

    def client(self, base: str) -> FhirClient:
        """One client per FHIR server, authorised like the subscriptions adapter's when that
        server is configured there (SMART Backend Services)."""
        key = base.rstrip("/")
        found = self._clients.get(key)
        if found is None:
            authorize = self.core.authorizer_for(key)
            found = self._clients[key] = FhirClient(key, authorize=authorize)
        return found

    def handlers(self) -> dict[str, Handler]:
        return {
            STEP_KIND: self.chaser.handle_step,
            POLL_KIND: self.chaser.handle_poll,
            OUTCOME_KIND: self.chaser.handle_outcome,
            WITHDRAW_KIND: self.chaser.handle_withdraw,
            NOTIFICATION_KIND: self.notes.handle_notification,
            UPDATE_KIND: self.referrers.handle_update,
            DELIVER_KIND: self.deliveries.handle_deliver,
            CLOCK_KIND: self.clocks.handle,
            TICK_KIND: self.digests.handle_tick,
            MAIL_RESULT: self.handle_mail_result,
            V2_ACK: self.handle_v2_ack,
        }

    def handle_mail_result(self, item: WorkItem) -> None:
        """Outreach's outcome of a provider mail we asked for."""
        payload = item.payload
        context: dict[str, Any] = payload.get("context") or {}
        purpose, sent = context.get("purpose"), payload.get("status") == "sent"
        if purpose == "chase" and sent:
            self.chaser.step_done(str(payload["referral_id"]), "email", context)
        elif purpose == "note":
            if sent:
                self.deliveries.link_sent(str(context["delivery"]))
            else:
                self.deliveries.failed(str(context["delivery"]),
                                       f"the note link mail was {payload.get('status')}: "
                                       f"{payload.get('error', '')}")
        elif purpose == "digest":
            if sent:
                self.digests.sent(str(context["digest"]))
            else:
                self.digests.failed(str(context["digest"]))
        if not sent:
            log.warning("provider mail not sent", extra={
                "referral_id": payload.get("referral_id", ""), "purpose": purpose,
                "status": payload.get("status")})

    def handle_v2_ack(self, item: WorkItem) -> None:
        """The bridge's report that a partner accepted a message we asked for."""
        payload = item.payload
        context: dict[str, Any] = payload.get("context") or {}
        purpose = context.get("purpose")
        if purpose == "chase":
            self.chaser.step_done(str(payload["referral_id"]), "v2-status", context)
        elif purpose == "update":
            row = self.referrers.get(int(context["update_id"]))
            if row is not None:
                self.referrers.mark_sent([row], "v2")
        elif purpose == "note":
            self.deliveries.record_receipt(str(context["delivery"]), "v2",
                                           datetime.fromisoformat(str(payload["at"])),
                                           remote=f"MSH-10 {payload.get('control_id', '')}")
