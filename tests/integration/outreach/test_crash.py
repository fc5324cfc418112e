"""A worker killed (SIGKILL) between the provider call and our record, then restarted: the SMS
is not sent twice (the interrupted send is found at the provider and recorded); killed just
before the call, the restarted worker sends it exactly once, also when the provider answers its
first look-up too late (as on a loaded machine, where this test used to fail now and then): the
look-up is asked again later and the message is never given up."""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from outreach_harness import NY_MOBILE, Harness, write_config

from outreach.channels.twilio import TwilioSms

CHILD = Path(__file__).resolve().parent / "crash_child.py"


@pytest.mark.parametrize("when", ["after", "before"])
def test_sigkill_around_the_provider_call_never_duplicates(harness: Harness, tmp_path: Path,
                                                           when: str) -> None:
    h = harness
    h.patient("k1")
    referral = h.referral("k1", priority="urgent")
    # the child starts a whole Python with the project: slow on a loaded machine
    child = subprocess.run([sys.executable, str(CHILD), str(write_config(h, tmp_path)),
                            h.clock.now.isoformat(), when], capture_output=True,
                           timeout=240)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    assert h.twilio.wait_idle()
    [message] = [m for m in h.rt.ostore.messages_for(referral.id) if m.channel == "sms"]
    assert message.status == "sending" and message.provider_sid is None
    assert len(h.twilio.messages(NY_MOBILE)) == (1 if when == "after" else 0)
    if when == "before":
        # the restarted worker's look-ups (the start item's, then the rung item's at once) are
        # answered after its client gave up (the gateway's delays run in its own threads:
        # nothing here waits for them)
        h.rt.channels["sms"] = TwilioSms(replace(h.rt.config.twilio, timeout_seconds=0.5))
        h.twilio.rules.delays["list"] = [5.0, 5.0]
    # the killed worker's lease expires; a restarted worker takes the item again
    h.advance(seconds=h.services.work.lease_seconds + 1)
    if when == "before":
        # both look-ups timed out: nothing sent yet, the message still open, asked again later
        assert h.twilio.rules.delays["list"] == [] and not h.twilio.messages(NY_MOBILE)
        assert h.rt.ostore.message(message.id).status == "sending"
    h.advance(minutes=5)
    texts = h.twilio.messages(NY_MOBILE)
    assert len(texts) == 1
    recorded = h.rt.ostore.message(message.id)
    assert recorded.provider_sid == texts[0].sid and recorded.status == "delivered"
    assert recorded.attempts == (1 if when == "after" else 2)
    h.advance(hours=1)
    assert len(h.twilio.messages(NY_MOBILE)) == 1
