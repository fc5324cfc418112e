"""Which lifecycle events a referring provider hears about and what they are told: hand-made
events, expected texts written here."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from loop.letters import DigestLine, digest, note_link, order_of, short, upload_request
from loop.milestones import format_when, milestone_of, notes_added
from referrals.model import Actor, Event, Reason, Referral, Stage

AT = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)
S = Stage


def referral(stage: Stage, source: str = "fhir|https://ehr.example/fhir|ServiceRequest/sr-9"
             ) -> Referral:
    return Referral(id="0190c4a2-0000-7000-8000-00003f2a9c1e", source_key=source,
                    service_request="ServiceRequest/sr-9", patient="Patient/p-1",
                    stage=stage, specialty="cardiology")


def event(action: str, before: Stage | None, after: Stage, *, reason: Reason | None = None,
          data: dict[str, object] | None = None) -> Event:
    return Event(referral_id="r", seq=3, action=action, from_stage=before, to_stage=after,
                 actor=Actor("Device/x"), at=AT, reason=reason, data=data or {})


NOTE = {"add_outputs": [{"type": "DocumentReference", "reference": "DocumentReference/n1"}]}


@pytest.mark.parametrize(("action", "before", "after", "extra", "milestone", "text", "status"), [
    ("accept", S.TRIAGE, S.ACCEPTED, {}, "accepted", "The referral was accepted.", "A"),
    ("decline", S.TRIAGE, S.DECLINED, {"reason": Reason("capacity", "No capacity until May")},
     "declined", "The referral was declined: No capacity until May.", "R"),
    ("schedule", S.OUTREACH, S.SCHEDULED, {}, "scheduled",
     "An appointment was booked for Mon 2 Mar 2026, 09:30 (America/Chicago).", "A"),
    ("schedule", S.SCHEDULED, S.SCHEDULED, {}, "scheduled",
     "An appointment was rescheduled for Mon 2 Mar 2026, 09:30 (America/Chicago).", "A"),
    ("no-show", S.SCHEDULED, S.NO_SHOW, {}, "no-show",
     "The patient did not attend the appointment on Mon 2 Mar 2026, 09:30 "
     "(America/Chicago).", "A"),
    ("complete-visit", S.SCHEDULED, S.VISIT_COMPLETED, {}, "visit-completed",
     "The patient was seen by the specialist.", "A"),
    ("close-loop", S.VISIT_COMPLETED, S.LOOP_CLOSED, {"data": NOTE}, "note-available",
     "The specialist's consult note is available.", "A"),
    ("link", S.VISIT_COMPLETED, S.VISIT_COMPLETED, {"data": NOTE}, "note-available",
     "The specialist's consult note is available.", "A"),
    ("fail", S.OUTREACH, S.FAILED, {"reason": Reason("unreachable")}, "failed",
     "The referral could not be completed: unreachable.", "R"),
])
def test_milestones_and_their_texts(action: str, before: Stage, after: Stage,
                                    extra: dict[str, object], milestone: str, text: str,
                                    status: str) -> None:
    found = milestone_of(referral(after), event(action, before, after, **extra),  # type: ignore
                         when=AT, zone="America/Chicago")
    assert found is not None
    assert (found.milestone, found.text, found.status) == (milestone, text, status)


@pytest.mark.parametrize(("action", "before", "after"), [
    ("assign", S.OUTREACH, S.OUTREACH), ("amend", S.SCHEDULED, S.SCHEDULED),
    ("record-outreach", S.OUTREACH, S.OUTREACH), ("complete-visit", S.VISIT_COMPLETED,
                                                  S.VISIT_COMPLETED),
    ("close-loop", S.VISIT_COMPLETED, S.LOOP_CLOSED),  # closed without a note linked here
    ("link", S.SCHEDULED, S.SCHEDULED), ("hold", S.OUTREACH, S.ON_HOLD),
])
def test_other_events_are_not_milestones(action: str, before: Stage, after: Stage) -> None:
    assert milestone_of(referral(after), event(action, before, after)) is None


def test_notes_added_are_the_document_references_an_event_linked() -> None:
    data = {"add_outputs": [{"type": "Appointment", "reference": "Appointment/a"},
                            {"type": "consult-note", "reference": "DocumentReference/d"}]}
    assert notes_added(event("link", S.SCHEDULED, S.SCHEDULED, data=data)) == [
        "DocumentReference/d"]
    assert format_when(None, "UTC") == ""


def test_mails_name_the_referral_and_the_order_never_the_patient() -> None:
    fhir, v2 = referral(S.LOOP_CLOSED), referral(
        S.LOOP_CLOSED, "hl7|GPSYS^GPCLINIC|REF-2024-0042^GPCLINIC")
    assert (short(fhir.id), order_of(fhir), order_of(v2)) == ("3F2A9C1E", "sr-9",
                                                              "REF-2024-0042")
    ask = upload_request(fhir, link="https://r.example/loop/u/T", expires=AT, visit_at=AT,
                         sender="Riverside referrals")
    assert ask.subject == "Consult note requested: referral 3F2A9C1E"
    assert "https://r.example/loop/u/T" in ask.text and "02 Mar 2026" in ask.text
    note = note_link(fhir, link="https://r.example/loop/n/T", expires=AT, sender="R")
    assert note.subject == "Consult note available: your order sr-9"
    assert "date of birth" in note.text
    daily = digest("riverside", "2026-03-02", [
        DigestLine(fhir.id, "sr-9", "cardiology", "The referral was accepted.", AT),
        DigestLine(fhir.id, "sr-9", "", "An appointment was booked.", AT)], "R")
    assert daily.subject == "Referral updates for 2026-03-02: 2 changes"
    assert "- Your order sr-9 (cardiology, our referral 3F2A9C1E): The referral was " \
           "accepted." in daily.text
    assert "<li>Your order sr-9 (referral, our referral 3F2A9C1E)" in daily.html
