"""The scheduling adapter's object graph for one process (services.adapters["scheduling"]):
the link and booking services, the referral listener, the work handlers, the periodic tick, the
reply hook for outreach and the booking-link callable outreach's ladder uses."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from referrals.errors import NotFound, PeerError, RefloopError
from referrals.model import SYSTEM, Actor, Command, Link, Referral
from referrals.store.work import WorkItem
from scheduling.appointments import AppointmentBook
from scheduling.booking import Booker, CannotBook
from scheduling.config import SchedulingConfig
from scheduling.context import Core
from scheduling.i18n import format_when
from scheduling.links import LinkStore
from scheduling.listener import Follower
from scheduling.messages import enqueue_message
from scheduling.orphans import check_booking
from scheduling.patient import load_patient
from scheduling.reminders import PREPARATION, SENT, ReminderBook
from scheduling.replies import Intent, context_parts, parse_intent
from scheduling.slots import SlotOption
from scheduling.sources import AuthorizerFor, Sources
from scheduling.waitlist import Waitlist
from scheduling.watch import Watch

log = logging.getLogger("refloop.scheduling")

PATIENT = Actor("Patient", "the patient (booking link)", "human")
ANSWERS_KIND = "scheduling.answers"
APPOINTMENT_KIND = "scheduling.appointment"
SUBSCRIBE_KIND = "scheduling.subscribe"
ANSWERS_SYSTEM = "http://refloop.org/fhir/sid/questionnaire-response"


class SchedulingAdapter:
    def __init__(self, core: Core, config: SchedulingConfig,
                 authorizer_for: AuthorizerFor | None = None) -> None:
        self.core = core
        self.config = config
        self.sources = Sources(config, db=core.db, authorizer_for=authorizer_for)
        self.book = AppointmentBook(core.db)
        self.reminders = ReminderBook(core.db)
        self.links = LinkStore(core.db, days=config.link_days,
                               per_link=config.dob_attempts_per_link,
                               per_source=config.dob_attempts_per_source,
                               session_minutes=config.session_minutes)
        self.follower = Follower(core, config, self.book, self.reminders, self.links)
        self.booker = Booker(core, config, self.sources, self.book)
        self.waitlist = Waitlist(core.db, offers_per_slot=config.offers_per_slot,
                                 offer_hours=config.offer_hours)
        self.watch = Watch(core, self.book, config.noshow_grace_minutes, self.slots_freed)

    # -- for outreach ------------------------------------------------------------------------

    def issue_booking_link(self, referral_id: str) -> str | None:
        """A new patient link for the referral, or None when the patient cannot use one (no
        destination to book into, no date of birth to check, the referral is finished)."""
        referral = self.core.store.try_get(referral_id)
        if referral is None or referral.terminal or self.booker.destination(referral) is None:
            return None
        with self.core.db.write() as conn:
            if not load_patient(conn, referral).birth_date:
                return None
            token = self.links.issue(referral_id, "booking", conn=conn)
        return self.follower.link_url(token)

    def handle_reply(self, reply: dict[str, Any]) -> bool:
        """The reply hook: True when the reply was ours to act on (it is then consumed)."""
        referral_id = str(reply.get("referral_id") or "")
        referral = self.core.store.try_get(referral_id) if referral_id else None
        if referral is None or referral.terminal:
            return False  # a finished referral: nothing to book, confirm or cancel any more
        intent = parse_intent(str(reply.get("text") or ""))
        kind, value = context_parts(str(reply.get("reply_context") or ""))
        n = str(reply.get("communication_id") or reply.get("received_at") or "")
        if intent == Intent.ACCEPT and kind == "offer":
            return self._accept_by_reply(referral, value, n)
        if intent == Intent.ACCEPT:  # a YES after a later message (a reminder) still takes
            offer = self.waitlist.open_offer_for(referral.id)  # the offer still open
            if offer is not None:
                return self._accept_by_reply(referral, offer.id, n)
        current = self.book.current(referral.id)
        if current is None or intent in (Intent.NONE, Intent.ACCEPT):
            return False
        if intent == Intent.CONFIRM:
            with self.core.db.write() as conn:
                self.book.confirm(conn, current.id)
            return True
        if intent == Intent.RESCHEDULE:
            self._send_link(referral, "booking-link", f"reply:{n}")
            return True
        self.booker.cancel(referral.id, Actor(referral.patient, "the patient (SMS)", "human"),
                           "cancelled by the patient by text message")
        return True

    def _accept_by_reply(self, referral: Referral, offer_id: str, n: str) -> bool:
        offer = self.waitlist.try_get(offer_id, referral.id)
        if offer is None:
            return False
        self.take_offer(referral.id, offer_id, Actor(referral.patient, "the patient (SMS)",
                                                     "human"))
        return True

    def take_offer(self, referral_id: str, offer_id: str, actor: Actor) -> bool:
        """Book an offered slot (the booking race decides); the old appointment is released."""
        offer = self.waitlist.try_get(offer_id, referral_id)
        if offer is None or offer.status != "offered" or offer.expires_at <= datetime.now(UTC):
            return False
        try:
            outcome = self.booker.book(referral_id, offer.slot_key, actor)
        except CannotBook:
            outcome = None
        won = outcome is not None and outcome.booked is not None
        self.waitlist.decide(offer, won)
        return won

    def _send_link(self, referral: Referral, purpose: str, n: str) -> None:
        with self.core.db.write() as conn:
            token = self.links.issue(referral.id, "booking", conn=conn)
            enqueue_message(self.core.work, conn, referral.id, purpose,
                            {"link": self.follower.link_url(token)}, n=n)

    # -- the waitlist ------------------------------------------------------------------------

    def slots_freed(self, server: str, keys: list[str]) -> None:
        """Freed slots on `server`: offered to waiting patients of the destinations there."""
        for destination in self.config.destinations:
            if destination.source not in ("fhir", "ihe") or \
                    destination.fhir_base.rstrip("/") != server.rstrip("/"):
                continue
            source = self.sources.for_destination(destination)
            if source is None:
                continue
            for key in keys:
                option = source.get(key)
                if option is not None:
                    self._offer(destination.name, option)

    def _offer(self, destination: str, option: SlotOption) -> None:
        with self.core.db.write() as conn:
            for offer in self.waitlist.offer(conn, destination, option):
                referral = self.core.store.get(offer.referral_id, conn)
                patient = load_patient(conn, referral)
                token = self.links.issue(referral.id, "offer", conn=conn)
                dest = self.config.destination(destination)
                enqueue_message(self.core.work, conn, referral.id, "waitlist-offer", {
                    "when": format_when(option.start, dest.time_zone if dest else "UTC",
                                        patient.language),
                    "link": f"{self.follower.link_url(token)}?offer={offer.id}"},
                    n=offer.id, expires_at=offer.expires_at,
                    reply_context=f"scheduling:offer:{offer.id}")

    # -- work handlers -----------------------------------------------------------------------

    def handle_release(self, item: WorkItem) -> None:
        """Cancel a released appointment on its calendar, then offer its freed slots."""
        payload = item.payload
        destination = self.config.destination(str(payload.get("destination") or ""))
        source = self.sources.for_destination(destination) if destination else None
        if source is None:
            log.warning("scheduling: no calendar to release on",
                        extra={"referral_id": payload.get("referral_id")})
            return
        freed = source.cancel(str(payload["server"]), str(payload["appointment_id"]),
                              str(payload.get("reason") or "cancelled"))
        if freed and destination is not None:
            for key in freed:
                option = source.get(key)
                if option is not None:
                    self._offer(destination.name, option)

    def handle_check_booking(self, item: WorkItem) -> None:
        """A booking the calendar may hold without our knowing it (orphans.py)."""
        check_booking(self.booker, item)

    def handle_recovery(self, item: WorkItem) -> None:
        """One step of the no-show / cancellation ladder: a new link, unless the referral was
        booked again, finished, or is waiting for something else meanwhile."""
        payload = item.payload
        referral = self.core.store.try_get(str(payload["referral_id"]))
        if referral is None or referral.terminal or referral.stage.value not in (
                "no-show", "appointment-cancelled", "outreach"):
            return
        if self.book.current(referral.id) is not None:
            return
        self._send_link(referral, str(payload["purpose"]),
                        f"{payload['round']}:{payload['step']}")

    def handle_noshow_task(self, item: WorkItem) -> None:
        """After the second no-show a person calls the patient (a coordinator task)."""
        referral_id = str(item.payload["referral_id"])
        misses = int(item.payload.get("misses", 2))
        tasks = self.core.tasks
        if tasks is None:
            log.warning("scheduling: coordinator tasks are not available in this build",
                        extra={"referral_id": referral_id})
            return
        tasks.open(referral_id, "rebook-after-no-show",
                   f"The patient missed {misses} appointments; call to rebook.",
                   due_at=datetime.now(UTC) + timedelta(days=1),
                   outcomes=["rebooked", "unreachable", "declined"], on_outcome=None,
                   key=f"scheduling:noshow:{referral_id}:{misses}",
                   data={"misses": misses})

    def handle_appointment(self, item: WorkItem) -> None:
        """A notification from the calendar (the subscriptions adapter's hook payload)."""
        payload = item.payload
        server = str(payload.get("server") or "")
        seen = set()
        for resource in payload.get("resources") or []:
            if resource.get("resourceType") == "Appointment":
                seen.add(str(resource.get("id")))
                self.watch.apply(server, resource)
        client = self.sources.client(server)
        for event in payload.get("events") or []:
            focus = str(event.get("focus") or "")
            rid = focus.split("/_history")[0].rsplit("/", 1)[-1]
            if "Appointment/" in focus and rid not in seen:
                reply = client.send("GET", f"Appointment/{rid}", ok=(200, 404, 410))
                if reply.status == 200 and isinstance(reply.body, dict):
                    self.watch.apply(server, reply.body)

    def handle_tick(self, _item: WorkItem | None = None, now: datetime | None = None) -> None:
        at = now or datetime.now(UTC)
        self.send_due_reminders(at)
        self.check_visits(at)
        self.waitlist.expire(at)
        self.refresh_published(at)

    # -- the tick's parts --------------------------------------------------------------------

    def send_due_reminders(self, now: datetime) -> int:
        sent = 0
        with self.core.db.write() as conn:
            for due in self.reminders.claim_due(conn, now):
                row = self.book.get(due.appointment, conn)
                if row is None or not row.active:
                    self.reminders.mark(conn, due.id, "cancelled", now)
                    continue
                referral = self.core.store.get(row.referral_id, conn)
                patient = load_patient(conn, referral)
                token = self.links.issue(referral.id, "manage", conn=conn)
                link = self.follower.link_url(token)
                when = format_when(row.start, row.time_zone, patient.language)
                if due.kind == PREPARATION:
                    enqueue_message(self.core.work, conn, referral.id, "preparation",
                                    {"instructions_link": f"{link}?go=prepare", "when": when},
                                    n=f"{row.id}:{due.days_before}")
                else:
                    enqueue_message(self.core.work, conn, referral.id, "reminder",
                                    {"when": when, "location": row.location, "link": link},
                                    n=f"{row.id}:{due.days_before}",
                                    reply_context=f"scheduling:appointment:{row.id}")
                self.reminders.mark(conn, due.id, SENT, now)
                sent += 1
        return sent

    def check_visits(self, now: datetime) -> int:
        """The poll: appointments past their time plus grace, read again from the calendar."""
        grace = timedelta(minutes=self.config.noshow_grace_minutes)
        every = timedelta(minutes=self.config.noshow_poll_minutes)
        done = 0
        for row in self.book.due_for_check(now, grace, every):
            if row.server.startswith("hl7:"):
                # a v2 calendar tells us (SIU^S26); our copy cannot show an arrival
                self.book.mark_checked(row.id, now)
                continue
            try:
                body = self._read_appointment(row.server, row.appointment_id)
            except PeerError as exc:
                log.warning("scheduling: visit check failed",
                            extra={"referral_id": row.referral_id, "error": str(exc)})
                continue
            self.book.mark_checked(row.id, now)
            if body is not None:
                self.watch.apply(row.server, body, polled=True, now=now)
                done += 1
        return done

    def _read_appointment(self, server: str, appointment_id: str) -> dict[str, Any] | None:
        reply = self.sources.client(server).send("GET", f"Appointment/{appointment_id}",
                                                 ok=(200, 404, 410))
        return reply.body if reply.status == 200 and isinstance(reply.body, dict) else None

    def refresh_published(self, now: datetime) -> int:
        from scheduling.sources.published import PublishedSlotSource

        done = 0
        for destination in self.config.destinations:
            if destination.source != "smart-links":
                continue
            source = self.sources.for_destination(destination)
            if isinstance(source, PublishedSlotSource) and source.due(self.core.cursors, now):
                try:
                    source.refresh(self.core.cursors, now)
                    done += 1
                except PeerError as exc:
                    log.warning("scheduling: publisher refresh failed",
                                extra={"destination": destination.name, "error": str(exc)})
        return done

    # -- preparation -------------------------------------------------------------------------

    def save_answers(self, referral_id: str, answers: dict[str, Any]) -> None:
        """Keep the QuestionnaireResponse, attach it to the referral and have it written to
        the EHR (`scheduling.answers` work, same transaction)."""
        referral = self.referral(referral_id)
        destination = self.booker.destination(referral)
        answers = {**answers, "identifier": {"system": ANSWERS_SYSTEM, "value": answers["id"]}}
        link = Link("QuestionnaireResponse", f"QuestionnaireResponse/{answers['id']}",
                    "pre-visit answers")
        with self.core.db.write() as conn:
            self.core.resources.put(answers, server="local", conn=conn)
            self.core.referrals.act(referral_id, Command(
                "link", actor=Actor(referral.patient, "the patient (booking link)", "human"),
                at=datetime.now(UTC), source="scheduling",
                changes={"add_outputs": [link]}), conn=conn)
            if destination is not None and destination.fhir_base:
                self.core.work.enqueue(ANSWERS_KIND, {
                    "referral_id": referral_id, "id": answers["id"],
                    "server": destination.fhir_base}, key=f"{ANSWERS_KIND}:{answers['id']}",
                    conn=conn)

    def handle_answers(self, item: WorkItem) -> None:
        """Write the QuestionnaireResponse to the EHR under our id (an update that creates it,
        so a retry writes the same resource again instead of a second one)."""
        answers = self.core.resources.try_get("QuestionnaireResponse", str(item.payload["id"]),
                                              server="local")
        if answers is None:
            return
        server = str(item.payload["server"])
        body = {k: v for k, v in answers.items() if k != "meta"}
        reply = self.sources.client(server).send(
            "PUT", f"QuestionnaireResponse/{answers['id']}", body=body, ok=(200, 201))
        if isinstance(reply.body, dict) and reply.body.get("id"):
            self.core.resources.put(reply.body, server=server)

    # -- notifications from the calendar ----------------------------------------------------

    def subscribe(self, base: str) -> str:
        """A rest-hook Subscription on the calendar for Appointments that end (no-show,
        cancelled, fulfilled) or whose patient came (arrived, checked-in), delivered to a hook
        of the subscriptions adapter."""
        hooks = self.core.hooks
        if hooks is None:
            raise RefloopError("the subscriptions adapter is not wired; appointments are "
                               "checked by polling only")
        hook = hooks.open_hook(server=base, purpose="scheduling",
                               deliver_kind=APPOINTMENT_KIND)
        reply = self.sources.client(base).send("POST", "Subscription", body={
            "resourceType": "Subscription", "status": "requested",
            "reason": "No-shows and cancellations of appointments booked through Refloop",
            "criteria": "Appointment?status=noshow,cancelled,fulfilled,arrived,checked-in",
            "channel": {"type": "rest-hook", "endpoint": hook.url,
                        "payload": "application/fhir+json", "header": [hook.header]}},
            ok=(200, 201))
        subscription_id = str((reply.body or {}).get("id") or "")
        if not subscription_id:
            raise PeerError(f"{base} created no Subscription id")
        hooks.attach(hook.id, subscription_id)
        return subscription_id

    def handle_subscribe(self, item: WorkItem) -> None:
        self.subscribe(str(item.payload["server"]))

    # -- for the SMART app and the CLI -------------------------------------------------------

    def referral(self, referral_id: str) -> Referral:
        found = self.core.store.try_get(referral_id)
        if found is None:
            raise NotFound(f"referral {referral_id}")
        return found


__all__ = ["PATIENT", "SYSTEM", "SchedulingAdapter"]
