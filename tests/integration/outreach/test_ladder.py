"""Ladders against THE TWILIO SANDBOX (a fake gateway: the real one cannot run here) and a real
SMTP server (aiosmtpd), on a fake clock shared by the work queue and outreach."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from outreach_harness import COORD, HONOLULU_MOBILE, NY_MOBILE, START, Harness

from outreach.planview import explain
from referrals.model import Stage
from referrals.store.schema import resources

NY = ZoneInfo("America/New_York")


def _resources(h: Harness, rtype: str) -> list[dict]:
    with h.services.db.read() as c:
        return list(c.execute(sa.select(resources.c.body).where(
            resources.c.resource_type == rtype, resources.c.server == "local")).scalars())


def _texts(h: Harness, number: str = NY_MOBILE) -> list[str]:
    return [m.body for m in h.twilio.messages(number)]


def test_routine_ladder_runs_to_unreachable_on_a_fake_clock(harness: Harness) -> None:
    h = harness
    h.patient("p1", email="pat@example.org")
    referral = h.referral("p1")
    h.settle()
    # at once: SMS and email; the referral moves to outreach with its first contact recorded
    assert len(_texts(h)) == 1 and "referral from Dr. Rivera" in _texts(h)[0]
    assert "cardiology" not in _texts(h)[0].lower() and "STOP" in _texts(h)[0]
    mail = h.mail.wait_for(1)
    assert mail[0].rcpt_tos == ["pat@example.org"]
    assert mail[0].message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert h.services.store.get(referral.id).stage == Stage.OUTREACH
    events = h.services.store.events(referral.id)
    assert [e.action for e in events[2:]] == ["start-outreach", "record-outreach",
                                              "record-outreach"]
    assert events[3].reason.text == "first contact by sms (first-contact)"
    sms = next(m for m in h.rt.ostore.messages_for(referral.id) if m.channel == "sms")
    assert sms.status == "delivered"  # the sandbox's signed callbacks arrived and were applied
    communications = {c["id"]: c for c in _resources(h, "Communication")}
    assert communications[sms.id]["status"] == "completed"
    assert communications[sms.id]["about"][0] == {"reference": f"Task/{referral.id}"}
    assert communications[sms.id]["medium"][0]["coding"][0]["code"] == "SMSWRIT"
    request = next(r for r in _resources(h, "CommunicationRequest") if r["id"] == sms.id)
    assert request["status"] == "completed"
    assert request["basedOn"] == [{"reference": referral.service_request}]

    # day 2, 10:00: the second SMS waits for the early evening window, then goes at 17:00
    h.advance(days=2)
    assert len(_texts(h)) == 1
    deferred = [c for c in _resources(h, "Communication") if c["status"] == "not-done"]
    assert deferred and deferred[-1]["statusReason"]["coding"][0]["code"] == "quiet-hours"
    h.at((START + timedelta(days=2)).astimezone(NY).replace(hour=17).astimezone(START.tzinfo))
    assert len(_texts(h)) == 2

    # day 4: the call reads the message and offers the keys, TwiML from the library
    h.at(START + timedelta(days=4))
    [call] = h.twilio.calls(NY_MOBILE)
    assert "<Gather" in call.twiml and "Press 9 to stop these calls" in call.twiml
    assert "referral from Dr. Rivera" in call.twiml and call.status == "completed"

    # day 7: the coordinator call task; its outcome is fed back into the ladder
    h.at(START + timedelta(days=7))
    [task] = h.services.tasks.open_for(referral.id)
    assert task.kind == "call-patient" and task.outcomes[0] == "reached"
    h.services.tasks.complete(task.id, "left-voicemail", COORD, "mailbox full")
    h.settle()
    last = h.services.store.events(referral.id)[-1]
    assert (last.action, last.reason.code) == ("record-outreach", "left-voicemail")
    shown = explain(h.rt, referral.id)
    assert shown["rungs"][4]["state"] == "task: left-voicemail"
    assert "the referral fails as unreachable" in shown["next"]

    # day 21: unreachable
    h.at(START + timedelta(days=21))
    final = h.services.store.get(referral.id)
    assert final.stage == Stage.FAILED and final.status_reason.code == "unreachable"
    assert explain(h.rt, referral.id)["status"] == "finished"


def test_first_sms_at_night_is_deferred_with_the_quiet_hours_reason(harness: Harness) -> None:
    h = harness
    hawaii = ZoneInfo("Pacific/Honolulu")
    h.at(START.astimezone(hawaii).replace(hour=22, minute=30).astimezone(START.tzinfo))
    h.patient("p2", phone=HONOLULU_MOBILE, state="HI")
    referral = h.referral("p2", priority="urgent")
    h.settle()
    assert h.twilio.messages() == []
    [message] = h.rt.ostore.messages_for(referral.id)
    assert (message.status, message.rule) == ("deferred", "quiet-hours")
    assert "Pacific/Honolulu" in message.reason
    decisions = h.rt.ostore.decisions_for(referral.id)
    assert decisions[0]["rule"] == "quiet-hours" and decisions[0]["outcome"] == "defer"
    opens = decisions[0]["not_before"].astimezone(hawaii)
    assert (opens.hour, opens.minute) == (8, 0)
    h.at(decisions[0]["not_before"])
    assert len(h.twilio.messages(HONOLULU_MOBILE)) == 1


def test_stop_between_two_scheduled_sends_stops_the_second(harness: Harness) -> None:
    h = harness
    h.patient("p3")
    referral = h.referral("p3")
    h.settle()
    assert len(_texts(h)) == 1
    assert h.twilio.reply(NY_MOBILE, "Stop texting me please") == 200
    h.settle()
    texts = _texts(h)
    assert len(texts) == 2 and "you will get no more texts" in texts[1]  # the one confirmation
    [consent] = _resources(h, "Consent")
    assert consent["patient"] == {"reference": "Patient/p3"}
    deny = consent["provision"]["provision"][0]
    assert deny["type"] == "deny" and deny["extension"][0]["valueCoding"]["code"] == "SMSWRIT"
    reply = next(c for c in _resources(h, "Communication") if c.get("inResponseTo"))
    assert reply["payload"][0]["contentString"] == "Stop texting me please"
    for again in ("STOP", "stop", "\uff33\uff34\uff2f\uff30"):  # opted out already: no answer
        assert h.twilio.reply(NY_MOBILE, again) == 200
    h.settle()
    assert len(_texts(h)) == 2
    h.at((START + timedelta(days=2)).astimezone(NY).replace(hour=17).astimezone(START.tzinfo))
    assert len(_texts(h)) == 2  # the second scheduled SMS was never sent
    skipped = [m for m in h.rt.ostore.messages_for(referral.id) if m.rule == "opted-out"]
    assert skipped and skipped[0].status == "not-done"
    # START opts back in
    h.twilio.reply(NY_MOBILE, "START")
    h.settle()
    assert "receive messages again" in _texts(h)[-1]
    assert h.rt.ostore.consent("Patient/p3", [NY_MOBILE]).opted_out == frozenset()
    h.twilio.reply(NY_MOBILE, "STOP")  # a new opt-out after the opt-in: confirmed again
    h.settle()
    assert "you will get no more texts" in _texts(h)[-1]


def test_a_landline_marks_sms_failing_and_moves_the_ladder_on(harness: Harness) -> None:
    h = harness
    h.twilio.rules.undeliverable[NY_MOBILE] = "30006"
    h.patient("p4")
    referral = h.referral("p4", priority="urgent")
    h.settle()
    [sms] = [m for m in h.rt.ostore.messages_for(referral.id) if m.channel == "sms"]
    assert (sms.status, sms.error_code) == ("undelivered", "30006")
    not_done = next(c for c in _resources(h, "Communication") if c["id"] == sms.id)
    assert not_done["statusReason"]["coding"][0]["code"] == "invalid-phone-number"
    # the voice rung ran now instead of in two hours (and calls still reach a landline)
    calls = h.twilio.calls(NY_MOBILE)
    assert len(calls) == 1 and h.clock.now == START
    # the next-morning SMS is skipped: the number cannot take texts
    h.at(START + timedelta(days=1, hours=1))
    assert len(h.twilio.messages(NY_MOBILE)) == 1
    assert "no-contact" in [m.rule for m in h.rt.ostore.messages_for(referral.id)]
