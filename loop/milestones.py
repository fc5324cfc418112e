"""Which lifecycle events are milestones a referring provider hears about, and what they are
told: plain text, the minimum necessary (no patient name: the referrer knows the patient by
their own order; the message names the referral and the order)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from referrals.model import Event, Referral, Stage

#: milestone -> the referral stage the v2 bridge's own outbound messages report for it
STAGE_OF = {"accepted": "accepted", "declined": "declined", "scheduled": "scheduled",
            "no-show": "no-show", "visit-completed": "visit-completed",
            "note-available": "loop-closed", "failed": "failed"}


@dataclass(frozen=True)
class Update:
    milestone: str
    text: str
    #: RRI RF1-1 referral status: A accepted, R rejected, P pending
    status: str


def notes_added(event: Event) -> list[str]:
    """The DocumentReferences (`DocumentReference/<id>`) an event linked to the referral."""
    found = []
    for link in event.data.get("add_outputs") or []:
        reference = str(link.get("reference", "")) if isinstance(link, dict) else ""
        if reference.startswith("DocumentReference/"):
            found.append(reference)
    return found


def has_note(referral: Referral) -> bool:
    return any(o.reference.startswith("DocumentReference/") for o in referral.outputs)


def milestone_of(referral: Referral, event: Event, *, when: datetime | None = None,
                 zone: str = "UTC") -> Update | None:
    """The milestone `event` is, if any. `when`: the appointment's start (scheduled, no-show)."""
    action, moved = event.action, event.from_stage != event.to_stage
    reason = (event.reason.text or event.reason.code) if event.reason else ""
    if action == "accept" and moved:
        return Update("accepted", "The referral was accepted.", "A")
    if action == "decline" and moved:
        return Update("declined", f"The referral was declined: {reason or 'no reason given'}.",
                      "R")
    if action == "schedule" and referral.stage == Stage.SCHEDULED:
        at = f" for {format_when(when, zone)}" if when else ""
        verb = "rescheduled" if event.from_stage == Stage.SCHEDULED else "booked"
        return Update("scheduled", f"An appointment was {verb}{at}.", "A")
    if action == "no-show" and moved:
        at = f" on {format_when(when, zone)}" if when else ""
        return Update("no-show", f"The patient did not attend the appointment{at}.", "A")
    if action == "complete-visit" and moved:
        return Update("visit-completed", "The patient was seen by the specialist.", "A")
    if notes_added(event) and action in ("close-loop", "link"):
        return Update("note-available", "The specialist's consult note is available.", "A")
    if action == "fail" and moved:
        return Update("failed", "The referral could not be completed: "
                      f"{reason or 'no reason given'}.", "R")
    return None


def format_when(moment: datetime | None, zone: str) -> str:
    """`Tue 3 Mar 2026, 09:30 (America/Chicago)` in the referrer's time zone."""
    if moment is None:
        return ""
    local = moment.astimezone(ZoneInfo(zone))
    return f"{local:%a} {local.day} {local:%b %Y, %H:%M} ({zone})"
