"""What the coordinator's app (the SMART app's referral page) shows and does about scheduling,
as plain data and callables: the appointment and its history (no-shows), reminder status, the
questionnaire answers, the patient links (a locked link is visible here), and booking on the
patient's behalf with the same slot search the patient uses. refloop/wiring connects it; the
SMART app never imports this adapter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from referrals.errors import PeerError
from referrals.model import Actor
from scheduling.adapter import SchedulingAdapter
from scheduling.booking import CannotBook
from scheduling.i18n import format_when
from scheduling.messages import enqueue_message


@dataclass(frozen=True)
class CoordinatorPort:
    summary: Callable[[str], dict[str, Any]]
    find_slots: Callable[[str, str], dict[str, Any]]
    book: Callable[[str, str, str, str], dict[str, Any]]
    send_link: Callable[[str], dict[str, Any]]


def coordinator_port(adapter: SchedulingAdapter) -> CoordinatorPort:
    return CoordinatorPort(summary=lambda rid: summary(adapter, rid),
                           find_slots=lambda rid, after: find_slots(adapter, rid, after),
                           book=lambda rid, key, who, name: book(adapter, rid, key, who, name),
                           send_link=lambda rid: send_link(adapter, rid))


def summary(adapter: SchedulingAdapter, referral_id: str) -> dict[str, Any]:
    referral = adapter.referral(referral_id)
    destination = adapter.booker.destination(referral)
    now = datetime.now(UTC)
    rows = adapter.book.of_referral(referral_id)
    current = adapter.book.current(referral_id)
    appointments = [{
        "when": format_when(r.start, r.time_zone, "en"), "status": r.status,
        "location": r.location, "clinician": r.clinician, "reference": r.reference,
        "server": r.server, "confirmed": r.confirmed_at is not None,
        "booked_by": r.booked_by, "current": current is not None and r.id == current.id}
        for r in reversed(rows)]
    reminders = [{"kind": r["kind"], "days_before": r["days_before"],
                  "due": r["due_at"].strftime("%Y-%m-%d %H:%M UTC"), "status": r["status"]}
                 for r in adapter.reminders.of_appointment(current.id)] if current else []
    links = [{"created": link.created_at.strftime("%Y-%m-%d %H:%M"),
              "expires": link.expires_at.strftime("%Y-%m-%d"),
              "state": link.state(now).value, "failed_attempts": link.failed_attempts,
              "purpose": link.purpose} for link in adapter.links.for_referral(referral_id)]
    return {
        "destination": destination.name if destination else "",
        "source": destination.source if destination else "",
        "appointments": appointments,
        "current": appointments[0] if current else None,
        "reminders": reminders,
        "no_shows": [a for a in appointments if a["status"] == "noshow"],
        "answers": _answers(adapter, referral.outputs),
        "links": links[-5:],
        "locked": any(link["state"] == "locked" for link in links),
        "waiting": adapter.waitlist.waiting(referral_id),
        "can_book": destination is not None and destination.source in ("fhir", "ihe"),
    }


def _answers(adapter: SchedulingAdapter, outputs: Any) -> list[dict[str, str]]:
    found = [link for link in outputs if link.type == "QuestionnaireResponse"]
    if not found:
        return []
    rid = found[-1].reference.rsplit("/", 1)[-1]
    response = adapter.core.resources.try_get("QuestionnaireResponse", rid, server="local")
    answers = []
    for item in (response or {}).get("item") or []:
        for answer in item.get("answer") or []:
            value = next(iter(answer.values()), "")
            if isinstance(value, dict):
                value = value.get("display") or value.get("code") or ""
            answers.append({"question": str(item.get("text") or item.get("linkId")),
                            "answer": "yes" if value is True else "no" if value is False
                            else str(value)})
    return answers


def find_slots(adapter: SchedulingAdapter, referral_id: str, after: str) -> dict[str, Any]:
    start = None
    if after:
        try:
            start = datetime.fromisoformat(after)
        except ValueError:
            start = None
    try:
        page = adapter.booker.find(referral_id, start)
    except CannotBook as exc:
        return {"ok": False, "message": str(exc), "slots": [], "after": ""}
    except PeerError as exc:
        return {"ok": False, "message": f"The calendar cannot be reached: {exc}",
                "slots": [], "after": ""}
    zone = page.destination.time_zone
    return {"ok": True, "message": "", "destination": page.destination.name,
            "slots": [{"key": o.key, "when": format_when(o.start, zone, "en"),
                       "location": o.location, "clinician": o.clinician}
                      for o in page.options],
            "after": page.after.isoformat() if page.after else ""}


def book(adapter: SchedulingAdapter, referral_id: str, key: str, who: str,
         name: str) -> dict[str, Any]:
    try:
        outcome = adapter.booker.book(referral_id, key, Actor(who, name, "human"))
    except (CannotBook, PeerError) as exc:
        return {"ok": False, "taken": False, "message": str(exc)}
    if outcome.taken:
        return {"ok": False, "taken": True,
                "message": "Somebody else booked that slot first; choose another."}
    if outcome.handoff:
        return {"ok": False, "taken": False,
                "message": f"This calendar books on its own site: {outcome.handoff}"}
    return {"ok": True, "taken": False, "message": "Booked."}


def send_link(adapter: SchedulingAdapter, referral_id: str) -> dict[str, Any]:
    """Revoke the patient's links (a locked one too) and send a new one."""
    url = None
    adapter.links.revoke_all(referral_id)
    url = adapter.issue_booking_link(referral_id)
    if url is None:
        return {"ok": False, "message": "No link can be sent: no destination matches this "
                "referral, or the patient has no date of birth on file."}
    with adapter.core.db.write() as conn:
        enqueue_message(adapter.core.work, conn, referral_id, "booking-link", {"link": url},
                        n=f"coordinator:{datetime.now(UTC).isoformat()}")
    return {"ok": True, "message": "A new booking link was sent to the patient."}
