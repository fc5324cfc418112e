"""Replies drive the referral: the reply hooks of other adapters see replies first (with their
reply_context), a booking intent sends the self-scheduling link or opens a task, "call me" opens
a call task, free text pauses the ladder until a person decides; and the outreach.message work
kind as another adapter uses it."""

from __future__ import annotations

import base64
from datetime import timedelta

from outreach_harness import COORD, NY_MOBILE, Harness

from referrals.model import Command


def test_reply_hooks_see_the_reply_with_its_context_first(harness: Harness) -> None:
    h = harness
    seen: list[dict] = []
    h.rt.reply_hooks.append(lambda reply: seen.append(reply) or reply["text"].upper() == "C")
    h.patient("r1")
    referral = h.referral("r1")
    h.settle()
    h.services.work.enqueue("outreach.message", {
        "referral_id": referral.id, "purpose": "reminder", "reply_context": "appointment:42",
        "params": {"when": "Thu 7 March 09:30", "location": "123 Main St",
                   "link": "https://book.example/r1"}},
        key=f"outreach.message:{referral.id}:reminder:1")
    h.advance(days=1)
    reminder = h.twilio.messages(NY_MOBILE)[-1].body
    assert "Reply C to confirm" in reminder and "https://book.example/r1" in reminder
    h.twilio.reply(NY_MOBILE, "C")
    h.settle()
    assert seen[-1]["reply_context"] == "appointment:42" and seen[-1]["channel"] == "sms"
    assert seen[-1]["referral_id"] == referral.id and seen[-1]["patient"] == "Patient/r1"
    assert h.services.tasks.open_for(referral.id) == []  # consumed: no handling of our own
    h.twilio.reply(NY_MOBILE, "HELP")
    h.settle()
    assert "for help call +15555550100" in h.twilio.messages(NY_MOBILE)[-1].body
    assert len(seen) == 1  # HELP is answered by outreach and never offered


def test_booking_intent_sends_the_link_or_opens_a_task(harness: Harness) -> None:
    h = harness
    h.patient("r2")
    referral = h.referral("r2")
    h.settle()
    h.twilio.reply(NY_MOBILE, "BOOK")
    h.settle()
    [task] = h.services.tasks.open_for(referral.id)
    assert task.kind == "send-booking-link"
    assert h.rt.ostore.plans_for(referral.id)[0].status == "stopped"
    events = h.services.store.events(referral.id)
    assert events[-1].reason.code == "patient-replied"
    h.rt.issue_booking_link = lambda rid: f"https://book.example/{rid[-6:]}"
    h.twilio.reply(NY_MOBILE, "yes please")
    h.settle()
    assert h.twilio.messages(NY_MOBILE)[-1].body.startswith(
        f"Springfield Medical Group: book your visit here: https://book.example/{referral.id[-6:]}")


def test_call_me_and_free_text(harness: Harness) -> None:
    h = harness
    h.patient("r3")
    referral = h.referral("r3")
    h.settle()
    h.twilio.reply(NY_MOBILE, "I am at work, can you call me after 5?")
    h.settle()
    kinds = {t.kind for t in h.services.tasks.open_for(referral.id)}
    assert kinds == {"call-patient"}
    assert "our team will call you soon" in h.twilio.messages(NY_MOBILE)[-1].body
    h.patient("r4", phone="+12015550123")
    other = h.referral("r4")
    h.settle()
    h.twilio.reply("+12015550123", "I already have an appointment elsewhere")
    h.settle()
    [task] = h.services.tasks.open_for(other.id)
    assert task.kind == "read-reply" and "already have an appointment" in task.reason
    [plan] = h.rt.ostore.plans_for(other.id)
    assert plan.status == "paused"
    h.advance(days=2, hours=8)  # the evening SMS rung would have run: paused, it does not
    assert len(h.twilio.messages("+12015550123")) == 1
    h.services.tasks.complete(task.id, "resume-outreach", COORD, "patient asked to wait")
    h.settle()
    assert h.rt.ostore.plans_for(other.id)[0].status == "active"
    h.advance(days=3)
    assert len(h.twilio.messages("+12015550123")) >= 2  # the ladder goes on from where it was


def test_message_work_kind_with_an_attachment_expiry_and_language(harness: Harness) -> None:
    h = harness
    h.patient("r5", phone="", email="r5@example.org", language="es")
    referral = h.referral("r5", accept=False)
    ics = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n"
    h.services.work.enqueue("outreach.message", {
        "referral_id": referral.id, "purpose": "booking-confirmation",
        "params": {"when": "7 March 09:30", "location": "123 Main St", "clinician": "Dr. Lee",
                   "link": "https://book.example/r5"},
        "attachments": [{"filename": "visit.ics", "content_type": "text/calendar",
                         "content_b64": base64.b64encode(ics).decode()}]},
        key=f"outreach.message:{referral.id}:booking-confirmation:1")
    h.settle()
    [mail] = h.mail.wait_for(1)
    message = mail.message
    assert message["Subject"] == "Su cita está reservada"
    parts = {p.get_content_type(): p for p in message.walk()}
    assert {"text/plain", "text/html", "text/calendar"} <= set(parts)
    assert parts["text/calendar"].get_content().replace("\r\n", "\n") == \
        ics.decode().replace("\r\n", "\n")
    h.services.work.enqueue("outreach.message", {
        "referral_id": referral.id, "purpose": "waitlist-offer", "channel": "sms",
        "params": {"when": "8 March", "link": "x"},
        "expires_at": (h.clock.now - timedelta(minutes=1)).isoformat()},
        key=f"outreach.message:{referral.id}:waitlist-offer:1")
    h.settle()
    expired = h.rt.ostore.message_by_key(f"outreach.message:{referral.id}:waitlist-offer:1")
    assert (expired.status, expired.rule) == ("not-done", "expired")
    assert h.rt.ostore.plans_for(referral.id) == []  # not accepted: no ladder started
    h.services.referrals.act(referral.id, Command("accept", actor=COORD, at=h.clock.now))
    h.settle()
    assert h.rt.ostore.plans_for(referral.id)[0].ladder == "routine"
