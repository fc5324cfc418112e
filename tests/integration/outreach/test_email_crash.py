"""An email handed to the SMTP server, then the process dies before recording it: SMTP keeps
no record we could ask, so the restarted worker does not send it again. It records the email
with delivery unknown (message, CommunicationRequest and Communication), shows it so on the
referral page's outreach timeline, and opens a task for a coordinator to check with the
patient; the task's outcome settles the record. Against a real SMTP server (aiosmtpd).

The death is an exception no handler catches, raised right after the real SMTP hand-off: the
worker records nothing and its lease stays, exactly what a SIGKILL leaves in the database (the
SMS variant with a real SIGKILL is test_crash.py)."""

from __future__ import annotations

from typing import Any

import pytest
from outreach_harness import COORD, Harness

from referrals.coordinator import KIND_LABELS
from smart_app.communications import _entry


class _Died(BaseException):
    """The process's death, between the provider's answer and our record."""


def test_an_email_interrupted_after_the_hand_off_is_recorded_as_delivery_unknown(
        harness: Harness) -> None:
    h = harness
    h.patient("m1", phone="", email="pat@example.org")
    referral = h.referral("m1")
    email = h.rt.channels["email"]
    real = email.send

    def send_then_die(message: Any) -> Any:
        real(message)
        raise _Died

    email.send = send_then_die  # type: ignore[method-assign]
    with pytest.raises(_Died):
        h.settle()
    email.send = real  # type: ignore[method-assign]
    assert len(h.mail.wait_for(1)) == 1
    [message] = [m for m in h.rt.ostore.messages_for(referral.id) if m.channel == "email"]
    assert message.status == "sending"
    # the dead worker's lease expires; the restarted one cannot ask SMTP, so it does not resend
    h.advance(seconds=h.services.work.lease_seconds + 1)
    h.advance(hours=1)
    assert len(h.mail.messages) == 1
    recorded = h.rt.ostore.message(message.id)
    assert recorded.status == "unknown" and "not sent again" in recorded.reason
    communication = h.services.resources.try_get("Communication", message.id)
    assert communication["status"] == "unknown"
    assert communication["statusReason"]["coding"][0]["code"] == "delivery-unknown"
    assert h.services.resources.try_get("CommunicationRequest", message.id)["status"] == "unknown"
    entry = _entry(communication)
    assert entry.direction == "delivery unknown" and "not sent again" in entry.why
    [task] = h.services.tasks.open_for(referral.id)
    assert task.kind == "check-delivery" and "pat@example.org" in task.reason
    assert KIND_LABELS[task.kind] == "Check the patient got the message"
    # the coordinator reached the patient, who has the email
    h.services.tasks.complete(task.id, "received", COORD)
    h.settle()
    assert h.rt.ostore.message(message.id).status == "delivered"
    assert h.services.resources.try_get("Communication", message.id)["status"] == "completed"
    assert h.services.tasks.open_for(referral.id) == []
