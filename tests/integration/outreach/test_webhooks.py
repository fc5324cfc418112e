"""The webhooks: a forged or unsigned Twilio request gets 403 and is stored nowhere; a signed one
is in the inbox before its 2xx; the call's key presses and the email one-click unsubscribe."""

from __future__ import annotations

import re

import requests
import sqlalchemy as sa
from outreach_harness import NY_MOBILE, Harness

from outreach.sandbox import twilio_signature
from referrals.store.schema import inbox, work_items


def _inbox_rows(h: Harness) -> list[dict]:
    with h.services.db.read() as c:
        return [dict(r) for r in c.execute(sa.select(inbox)).mappings()]


def test_forged_callbacks_are_refused_and_stored_nowhere(harness: Harness) -> None:
    h = harness
    url = f"{h.url}/outreach/twilio/status?m=abc"
    params = {"MessageSid": "SM" + "1" * 32, "MessageStatus": "delivered",
              "AccountSid": h.twilio.account_sid, "To": NY_MOBILE}
    attempts = [
        {},  # no signature at all
        {"X-Twilio-Signature": twilio_signature("not-the-token", url, params)},
        {"X-Twilio-Signature": twilio_signature(h.twilio.auth_token, url.replace("abc", "x"),
                                                params)},
    ]
    for headers in attempts:
        answer = requests.post(url, data=params, headers=headers, timeout=10)
        assert answer.status_code == 403
    tampered = {**params, "MessageStatus": "failed"}
    signed_for_other = twilio_signature(h.twilio.auth_token, url, params)
    assert requests.post(url, data=tampered, headers={"X-Twilio-Signature": signed_for_other},
                         timeout=10).status_code == 403
    inbound = f"{h.url}/outreach/twilio/sms"
    forged_reply = {"From": NY_MOBILE, "Body": "STOP", "MessageSid": "SM" + "2" * 32}
    assert requests.post(inbound, data=forged_reply, timeout=10, headers={
        "X-Twilio-Signature": twilio_signature("guess", inbound, forged_reply)}
    ).status_code == 403
    assert _inbox_rows(h) == []
    with h.services.db.read() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(work_items)).scalar_one() == 0
    # the same request signed with the account's token is stored before the 2xx
    good = requests.post(url, data=params, timeout=10, headers={
        "X-Twilio-Signature": twilio_signature(h.twilio.auth_token, url, params)})
    assert good.status_code == 204
    [row] = _inbox_rows(h)
    assert row["channel"] == "twilio-status" and b"MessageStatus=delivered" in row["body"]


def test_a_signed_reply_is_in_the_inbox_before_the_answer(harness: Harness) -> None:
    h = harness
    h.patient("w1")
    h.referral("w1")
    h.settle()
    assert h.twilio.reply(NY_MOBILE, "who is this?") == 200
    stored = [r for r in _inbox_rows(h) if r["channel"] == "twilio-sms"]
    assert len(stored) == 1 and stored[0]["status"] == "received"  # not yet processed
    h.settle()
    [task] = h.services.tasks.list_open(kind="read-reply")
    assert "who is this?" in task.reason


def test_voice_key_presses_connect_send_the_link_and_opt_out(harness: Harness) -> None:
    h = harness
    h.rt.issue_booking_link = lambda referral_id: f"https://book.example/{referral_id[-8:]}"
    h.patient("w2")
    referral = h.referral("w2", priority="urgent")
    h.settle()
    h.advance(hours=2)
    [call] = h.twilio.calls(NY_MOBILE)
    assert "Gather" in call.twiml
    two = h.twilio.press(call.sid, "2")
    assert "text you a link" in two
    h.settle()
    assert f"https://book.example/{referral.id[-8:]}" in h.twilio.messages(NY_MOBILE)[-1].body
    one = h.twilio.press(call.sid, "1")
    assert "<Dial>+15555550101</Dial>" in one
    nine = h.twilio.press(call.sid, "9")
    assert "will not receive these calls" in nine
    h.settle()
    consent = h.rt.ostore.consent("Patient/w2", [NY_MOBILE])
    assert consent.opted_out == {"voice"}
    # voice key presses are signed like the other webhooks
    action = f"{h.url}/outreach/twilio/voice/x/keys"
    assert requests.post(action, data={"Digits": "9"}, timeout=10).status_code == 403
    # a signed key press for no call of ours is kept, and promises nothing
    form = {"Digits": "9", "CallSid": "CA" + "9" * 32}
    signature = twilio_signature(h.twilio.auth_token, action, form)
    unknown = requests.post(action, data=form, headers={"X-Twilio-Signature": signature},
                            timeout=10)
    assert unknown.status_code == 200 and "Goodbye." in unknown.text
    assert "will not receive" not in unknown.text


def test_email_one_click_unsubscribe(harness: Harness) -> None:
    h = harness
    h.patient("w3", phone="", email="w3@example.org")
    referral = h.referral("w3")
    h.settle()
    [mail] = h.mail.wait_for(1)
    link = re.search(r"<(http[^>]+)>", str(mail.message["List-Unsubscribe"])).group(1)
    page = requests.get(link, timeout=10)
    assert page.status_code == 200 and "<form" in page.text  # a GET only asks
    for inexact in (link + "!!", link + "A", link[:-1]):  # the exact token only
        assert requests.get(inexact, timeout=10).status_code == 404
        assert requests.post(inexact, data={"List-Unsubscribe": "One-Click"},
                             timeout=10).status_code == 404
    assert h.rt.ostore.consent("Patient/w3", []).opted_out == frozenset()
    done = requests.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=10,
                         allow_redirects=False)
    assert done.status_code == 200
    h.settle()
    assert h.rt.ostore.consent("Patient/w3", []).opted_out == {"email"}
    assert requests.post(link[:-4] + "AAAA", timeout=10).status_code == 404
    h.services.work.enqueue("outreach.message", {"referral_id": referral.id,
                                                 "purpose": "coordinator-callback"},
                            key="outreach.message:w3:1")
    h.settle()
    assert len(h.mail.messages) == 1
    last = h.rt.ostore.message_by_key("outreach.message:w3:1")
    assert (last.status, last.rule) == ("not-done", "opted-out")


def test_a_signed_callback_with_a_nul_is_refused_and_stored_nowhere(harness: Harness) -> None:
    """PostgreSQL holds no NUL: such a field answered 500 there (Twilio retrying it forever)."""
    h = harness
    for path, params in (("/outreach/twilio/status?m=%00", {"MessageSid": "SMx"}),
                         ("/outreach/twilio/status?m=abc", {"MessageStatus": "\x00"}),
                         ("/outreach/twilio/sms", {"MessageSid": "\x00", "Body": "hi"})):
        url = h.url + path
        answer = requests.post(url, data=params, timeout=10, headers={
            "X-Twilio-Signature": twilio_signature(h.twilio.auth_token, url, params)})
        assert answer.status_code == 400
    assert _inbox_rows(h) == []
