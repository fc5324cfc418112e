"""The demo's scheduling step (`refloop demo`): a small calendar on the sandbox EHR (one
clinician, one clinic, a few free slots in ten days), a demo referral for a patient of that EHR,
its patient booking link, a slot booked on that calendar as the patient would from the link's
page, and the confirmation outreach is asked to send (with its .ics). refloop/wiring connects
it (the demo never imports this adapter directly)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from referrals.ids import short_id
from referrals.model import Actor, Command, Referral, new_referral_id
from referrals.store.schema import work_items
from scheduling.adapter import SchedulingAdapter
from scheduling.client import FhirClient
from scheduling.i18n import format_when

PREFIX = "refloop-demo"
SPECIALTY = "cardiology"
ZONE = "America/Chicago"
COORDINATOR = Actor("PractitionerRole/coordinator-1", "Casey Coordinator", "human")


def section(ehr_base: str) -> dict[str, Any]:
    """The scheduling configuration of the demo: one destination on the sandbox EHR."""
    return {"destinations": [{
        "name": "demo-cardiology", "specialties": [SPECIALTY], "source": "fhir",
        "fhir_base": ehr_base, "schedule_actors": [f"Practitioner/{PREFIX}-dr"],
        "time_zone": ZONE, "subscribe": False, "phone": "555-0100"}]}


def run_demo(adapter: SchedulingAdapter, ehr_base: str, echo: Callable[[str], None],
             now: datetime | None = None) -> dict[str, Any]:
    at = now or datetime.now(UTC)
    client = FhirClient(ehr_base, timeout=10, retries=2)
    patient = load_calendar(client, at)
    referral = demo_referral(adapter, ehr_base, patient)
    echo(f"\nSelf-scheduling (a calendar of 3 free slots on the sandbox EHR, {ehr_base}):")
    link = adapter.issue_booking_link(referral.id) or ""
    echo(f"  booking link for referral {short_id(referral.id)} (opens with the date of birth "
         f"{patient['birthDate']}): {link}")
    current = adapter.book.current(referral.id)
    if current is None:
        page = adapter.booker.find(referral.id, now=at)
        for option in page.options[:3]:
            echo(f"  free: {format_when(option.start, ZONE, 'en')}, {option.clinician}, "
                 f"{option.location}")
        if not page.options:
            echo("  no free slot found on the calendar")
            return {"referral_id": referral.id, "link": link, "booked": None}
        actor = Actor(referral.patient, "the patient (booking link)", "human")
        outcome = adapter.booker.book(referral.id, page.options[0].key, actor, now=at)
        current = outcome.booked
        if current is None:
            echo("  booking failed: " + ("; ".join(outcome.notes) or "the slot was taken"))
            return {"referral_id": referral.id, "link": link, "booked": None}
    appointment = client.read(current.reference).body
    echo(f"  booked: {current.reference} on the EHR, {appointment.get('status')}, "
         f"{format_when(current.start, current.time_zone, 'en')}; the referral is now "
         f"{adapter.core.store.get(referral.id).stage.value}")
    confirmation = _confirmation(adapter, referral.id)
    if confirmation:
        params = confirmation["params"]
        files = ", ".join(a["filename"] for a in confirmation.get("attachments", []))
        echo(f"  confirmation for outreach to send: \"your visit is booked\" {params['when']}, "
             f"{params['clinician']}, {params['location']}; attached: {files or 'none'}")
    steps = adapter.reminders.of_appointment(current.id)
    echo("  reminders planned: " + (", ".join(
        f"{s['days_before']} d before" for s in steps) or "none (the visit is close)"))
    return {"referral_id": referral.id, "link": link, "booked": current.reference,
            "confirmation": bool(confirmation)}


def load_calendar(client: FhirClient, now: datetime) -> dict[str, Any]:
    """The demo calendar, written with fixed ids (a second run updates it): three 30-minute
    slots ten days from now, free."""
    patient: dict[str, Any] = {"resourceType": "Patient", "id": f"{PREFIX}-patient",
               "name": [{"family": "Okafor", "given": ["Ada"]}], "gender": "female",
               "birthDate": "1961-04-23"}
    resources: list[dict[str, Any]] = [
        patient,
        {"resourceType": "Practitioner", "id": f"{PREFIX}-dr",
         "name": [{"family": "Lindqvist", "given": ["Eva"], "prefix": ["Dr"]}]},
        {"resourceType": "Location", "id": f"{PREFIX}-clinic", "status": "active",
         "name": "Heart Clinic, 12 Elm Street"},
        {"resourceType": "Schedule", "id": f"{PREFIX}-schedule", "active": True,
         "actor": [{"reference": f"Practitioner/{PREFIX}-dr"},
                   {"reference": f"Location/{PREFIX}-clinic"}]}]
    day = (now + timedelta(days=10)).replace(hour=15, minute=0, second=0, microsecond=0)
    for n in range(3):
        begin = day + timedelta(minutes=30 * n)
        resources.append({
            "resourceType": "Slot", "id": f"{PREFIX}-{day:%Y%m%d}-{n}",
            "schedule": {"reference": f"Schedule/{PREFIX}-schedule"}, "status": "free",
            "start": _instant(begin), "end": _instant(begin + timedelta(minutes=30))})
    for resource in resources:
        if resource["resourceType"] == "Slot" and _busy(client, resource["id"]):
            continue  # booked on an earlier run today: stays busy
        client.send("PUT", f"{resource['resourceType']}/{resource['id']}", body=resource)
    return patient


def demo_referral(adapter: SchedulingAdapter, ehr_base: str, patient: dict[str, Any]
                  ) -> Referral:
    """The demo's referral to cardiology for the calendar's patient (the same one each run)."""
    core = adapter.core
    core.resources.put(patient, server=ehr_base)
    source = f"fhir|{ehr_base}|ServiceRequest/{PREFIX}-scheduling"
    found = core.store.try_get_by_source(source)
    if found is not None:
        return found
    draft = Referral(id=new_referral_id(), source_key=source,
                     service_request=f"ServiceRequest/{PREFIX}-scheduling",
                     patient=f"Patient/{patient['id']}", specialty=SPECIALTY,
                     reason_text="Cardiology consult: palpitations")
    referral, _ = core.referrals.open(draft, Command("detect"))
    return core.referrals.act(referral.id, Command("accept", actor=COORDINATOR))


def _busy(client: FhirClient, slot_id: str) -> bool:
    reply = client.send("GET", f"Slot/{slot_id}", ok=(200, 404, 410))
    return reply.status == 200 and reply.body.get("status") == "busy"


def _confirmation(adapter: SchedulingAdapter, referral_id: str) -> dict[str, Any] | None:
    with adapter.core.db.read() as conn:
        payloads = conn.execute(sa.select(work_items.c.payload).where(
            work_items.c.kind == "outreach.message",
            work_items.c.idempotency_key.like(f"outreach.message:{referral_id}:%"))
            .order_by(work_items.c.id)).scalars().all()
    found = [p for p in payloads if p.get("purpose") in ("booking-confirmation",
                                                          "reschedule-confirmation")]
    return dict(found[-1]) if found else None


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
