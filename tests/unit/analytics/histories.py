"""Event histories built through the real lifecycle (referrals.lifecycle, pure): each step is a
command a real adapter would send, so the facts are computed from the event log Refloop writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from analytics.facts import Facts, facts_from
from referrals import closed_loop as loop
from referrals.lifecycle import start, transition
from referrals.model import Actor, Command, Event, Link, Reason, Referral

LISTENER = Actor("Device/refloop-listener", "Refloop EHR listener")
OUTREACH = Actor("Device/refloop-outreach", "Refloop outreach")
CALENDAR = Actor("Device/refloop-scheduling", "Refloop scheduling")
COORDINATOR = Actor("PractitionerRole/coord", "Casey Coordinator", "human")
PATIENT = Actor("Patient", "the patient (booking link)", "human")
H = timedelta(hours=1)
D = timedelta(days=1)


@dataclass
class History:
    """One referral's life: `step(action, at, ...)` applies a command; `facts()` reads them."""

    referral: Referral
    events: list[Event] = field(default_factory=list)
    #: what was asked, in order (the draft's detect first), to replay through a real store
    draft: Referral | None = None
    commands: list[Command] = field(default_factory=list)

    @classmethod
    def detected(cls, rid: str, at: datetime, **attrs: Any) -> History:
        draft = Referral(id=rid, source_key=f"test|{rid}", service_request=f"ServiceRequest/{rid}",
                         patient=attrs.pop("patient", f"Patient/{rid}"),
                         requester=attrs.pop("requester", "Practitioner/gp-1"),
                         performer=attrs.pop("performer", "Organization/cardio-clinic"),
                         specialty=attrs.pop("specialty", "cardiology"), **attrs)
        detect = Command("detect", actor=LISTENER, at=at)
        change = start(draft, detect)
        return cls(change.referral, [change.event], draft, [detect])

    def step(self, action: str, at: datetime, *, actor: Actor = CALENDAR,
             reason: str | None = None, **changes: Any) -> History:
        command = Command(action, actor=actor, at=at,
                          reason=Reason(reason, reason) if reason else None, changes=changes)
        change = transition(self.referral, command)
        self.referral = change.referral
        self.events.append(change.event)
        self.commands.append(command)
        return self

    def note(self, at: datetime, action: str = "link") -> History:
        document = [Link("consult-note", f"DocumentReference/{self.referral.id}-note")]
        return self.step(action, at, add_outputs=document)

    def facts(self) -> Facts:
        return facts_from(self.referral, self.events)


T0 = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)


def referral_a() -> History:
    h = History.detected("a", T0)
    h.step("accept", T0 + 2 * H, actor=COORDINATOR)
    h.step("start-outreach", T0 + 5 * H, actor=OUTREACH)
    h.step("record-outreach", T0 + 5 * H, actor=OUTREACH, reason="sms-sent")
    h.step("schedule", T0 + 24 * H, actor=PATIENT)
    h.step("complete-visit", T0 + 10 * D)
    h.note(T0 + 12 * D, action="close-loop")
    return h.step(loop.RECORD_RECEIPT, T0 + 13 * D)


def referral_b() -> History:
    h = History.detected("b", T0 + 1 * D)
    h.step("triage", T0 + 1 * D + H, actor=COORDINATOR)
    return h.step("cancel", T0 + 2 * D, actor=COORDINATOR, reason="referrer-cancelled")


def referral_c() -> History:
    h = History.detected("c", T0)
    h.step("accept", T0 + H, actor=COORDINATOR)
    h.step("schedule", T0 + 1 * D, actor=COORDINATOR)
    h.step("no-show", T0 + 5 * D, reason="no-check-in")
    h.step("schedule", T0 + 6 * D, actor=PATIENT)
    h.step("no-show", T0 + 10 * D, reason="no-check-in")
    h.step("schedule", T0 + 11 * D, actor=COORDINATOR)
    return h.step("complete-visit", T0 + 20 * D)


def referral_d() -> History:
    h = History.detected("d", T0)
    h.step("accept", T0 + H, actor=COORDINATOR)
    h.step("schedule", T0 + 2 * D, actor=COORDINATOR)
    h.note(T0 + 8 * D)
    h.step(loop.RECORD_RECEIPT, T0 + 8 * D + 12 * H)
    return h.step("complete-visit", T0 + 9 * D)


def referral_f() -> History:
    h = History.detected("f", T0 + 3 * D)
    h.step("triage", T0 + 3 * D + H, actor=COORDINATOR)
    return h.step("decline", T0 + 4 * D, actor=COORDINATOR, reason="not-covered")


def referral_g() -> History:
    h = History.detected("g", T0 + 3 * D)
    h.step("accept", T0 + 3 * D + H, actor=COORDINATOR)
    h.step("start-outreach", T0 + 3 * D + 2 * H, actor=OUTREACH)
    h.step("record-outreach", T0 + 3 * D + 2 * H, actor=OUTREACH, reason="sms-sent")
    return h.step("fail", T0 + 24 * D, actor=OUTREACH, reason="unreachable")


def october() -> list[History]:
    return [referral_a(), referral_b(), referral_c(), referral_d(), referral_f(), referral_g()]


def replay(service: Any, history: History) -> str:
    """Send `history`'s commands through a real ReferralService (store, event log, Provenance);
    returns the referral id."""
    assert history.draft is not None
    referral, created = service.open(history.draft, history.commands[0])
    assert created
    for command in history.commands[1:]:
        service.act(referral.id, command)
    return str(referral.id)


SPECIALTIES = ("cardiology", "dermatology", "neurology")
REFERRERS = ("Practitioner/gp-1", "Practitioner/gp-2", "PractitionerRole/gp-3")
DESTINATIONS = ("Organization/north", "Organization/south")
PAYERS = ("Payer A", "Payer B", "")
PRIORITY_CHOICES = ("routine", "routine", "urgent", "stat")


def random_history(rng: Any, rid: str, at: datetime) -> History:
    """A plausible life, chosen with `rng`: every path of the funnel, with drop-offs, no-shows,
    authorization, withdrawals and notes, all through the real lifecycle."""
    h = History.detected(rid, at, specialty=rng.choice(SPECIALTIES),
                         requester=rng.choice(REFERRERS), performer=rng.choice(DESTINATIONS),
                         payer=rng.choice(PAYERS), priority=rng.choice(PRIORITY_CHOICES))
    t = at + timedelta(hours=rng.randrange(1, 30))
    if rng.random() < 0.1:
        return h.step("cancel", t, actor=COORDINATOR, reason="referrer-cancelled")
    if rng.random() < 0.1:
        return h.step("decline", t, actor=COORDINATOR, reason=rng.choice(("not-covered",
                                                                          "wrong-specialty")))
    if rng.random() < 0.15:
        return h  # still waiting for a decision
    h.step("accept", t, actor=COORDINATOR)
    team = rng.random() < 0.3
    if team:  # a post-discharge referral: TEAM's 30-day clock from discharge
        h.step(loop.START_CLOCK, t, clock={
            "program": "team", "goal": "visit", "started_at": (at - D).isoformat(),
            "due_at": (at + timedelta(days=rng.choice((10, 29)))).isoformat()})
    if rng.random() < 0.3:
        t += timedelta(hours=rng.randrange(1, 10))
        h.step("request-authorization", t, auth_state="submitted")
        t += timedelta(hours=rng.randrange(2, 200))
        if rng.random() < 0.2:
            return h.step("hold", t, reason="auth-denied", auth_state="denied")
        h.step("authorize", t, auth_state="approved")
    else:
        h.step("start-outreach", t, actor=OUTREACH)
    t += timedelta(minutes=rng.randrange(1, 3000))
    h.step("record-outreach", t, actor=OUTREACH, reason="sms-sent")
    if rng.random() < 0.15:
        h.step("fail", t + 21 * D, actor=OUTREACH, reason="unreachable")
        if team:
            h.step(loop.MISS_CLOCK, t + 22 * D, clock={"program": "team",
                                                      "at": (t + 22 * D).isoformat()})
        return h
    t += timedelta(hours=rng.randrange(1, 200))
    h.step("schedule", t, actor=rng.choice((PATIENT, COORDINATOR)))
    while rng.random() < 0.25:
        t += timedelta(days=rng.randrange(3, 30))
        h.step("no-show", t, reason="no-check-in")
        t += timedelta(days=rng.randrange(1, 5))
        h.step("schedule", t, actor=COORDINATOR)
    if rng.random() < 0.15:
        return h  # visit ahead
    t += timedelta(days=rng.randrange(3, 40))
    h.step("complete-visit", t)
    if team:
        h.step(loop.MEET_CLOCK, t, clock={"program": "team", "at": t.isoformat()})
    if rng.random() < 0.3:
        return h
    t += timedelta(days=rng.randrange(1, 20))
    h.note(t, action="close-loop")
    if rng.random() < 0.7:
        h.step(loop.RECORD_RECEIPT, t + timedelta(hours=rng.randrange(1, 100)))
    return h
