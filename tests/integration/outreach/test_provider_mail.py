"""Mail to providers' offices (`outreach.provider-email`) through the real SMTP channel (aiosmtpd),
on SQLite and PostgreSQL: sent once with none of the patient rules (a clinic's office is written
to at 03:00 local, with no opt-out footer), the outcome reported to the caller's `on_result`
kind, a refused address reported as failed without retrying, an interrupted send never repeated,
and a malformed ask kept in quarantine."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from outreach_harness import Harness

from outreach.provider_mail import status_of
from outreach.tables import outreach_provider_mail
from referrals.store.schema import quarantine, work_items

KIND = "outreach.provider-email"


def ask(h: Harness, key: str, **changes: Any) -> None:
    payload = {"to": "notes@heart-clinic.example", "subject": "Consult note requested",
               "text": "Please upload the consult note: https://refloop.test/loop/u/abc",
               "html": "<p>Please upload the consult note.</p>", "purpose": "note-request",
               "referral_id": "r-1", "on_result": "test.mail-result",
               "context": {"chase": "c-1"}, **changes}
    h.services.work.enqueue(KIND, payload, key=key)


def results(h: Harness) -> list[dict[str, Any]]:
    with h.services.db.read() as c:
        return [r.payload for r in c.execute(sa.select(work_items.c.payload).where(
            work_items.c.kind == "test.mail-result").order_by(work_items.c.id))]


def test_sent_once_at_night_without_patient_rules_and_reported(harness: Harness) -> None:
    h = harness
    h.clock.now = datetime(2030, 3, 5, 8, 0, tzinfo=UTC)  # 03:00 in New York
    ask(h, "loop:mail:1")
    h.worker.drain()
    [mail] = h.mail.wait_for(1)
    message = mail.message
    assert mail.rcpt_tos == ["notes@heart-clinic.example"]
    assert message["Subject"] == "Consult note requested"
    assert message["List-Unsubscribe"] is None and "STOP" not in message.as_string()
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    [result] = results(h)
    assert (result["status"], result["context"], result["referral_id"]) == (
        "sent", {"chase": "c-1"}, "r-1")
    assert result["message_id"] == message["Message-ID"]
    assert status_of(h.rt, "loop:mail:1") == "sent"
    # the same ask again (a retried caller) is the same work item: nothing more is sent
    ask(h, "loop:mail:1")
    h.worker.drain()
    assert len(h.mail.messages) == 1 and len(results(h)) == 1


def test_a_refused_address_is_reported_failed_and_not_retried(harness: Harness) -> None:
    h = harness
    ask(h, "loop:mail:2", to="office@bounce.example.org")
    h.worker.drain()
    [result] = results(h)
    assert result["status"] == "failed" and "refused the address" in result["error"]
    assert h.mail.messages == []
    with h.services.db.read() as c:
        status = c.execute(sa.select(work_items.c.status).where(
            work_items.c.idempotency_key == "loop:mail:2")).scalar_one()
    assert status == "done"


def test_an_interrupted_send_is_not_repeated(harness: Harness) -> None:
    h = harness
    now = h.rt.now()
    with h.services.db.write() as c:  # an attempt that stopped during the SMTP call
        c.execute(outreach_provider_mail.insert().values(
            key="loop:mail:3", purpose="digest", address="a@b.example", subject="s",
            status="sending", created_at=now, updated_at=now))
    ask(h, "loop:mail:3")
    h.worker.drain()
    assert h.mail.messages == []
    [result] = results(h)
    assert result["status"] == "unknown" and "not sent again" in result["error"]


def test_a_malformed_ask_is_quarantined_with_the_reason(harness: Harness) -> None:
    h = harness
    ask(h, "loop:mail:4", to="a@b.example, c@d.example")
    ask(h, "loop:mail:5", subject="Hello\r\nBcc: everyone@example.org")
    h.worker.drain()
    with h.services.db.read() as c:
        reasons = sorted(c.execute(sa.select(quarantine.c.reason).where(
            quarantine.c.kind == KIND)).scalars())
    assert len(reasons) == 2
    assert "'subject' must be one non-empty line" in reasons[0]
    assert "is not one email address" in reasons[1]
    assert h.mail.messages == [] and results(h) == []
