"""A worker killed (SIGKILL) between the provider call and our record, then restarted: the SMS
is not sent twice (the interrupted send is found at the provider and recorded); killed just
before the call, the restarted worker sends it exactly once."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from outreach_harness import NY_MOBILE, Harness, write_config

CHILD = Path(__file__).resolve().parent / "crash_child.py"


@pytest.mark.parametrize("when", ["after", "before"])
def test_sigkill_around_the_provider_call_never_duplicates(harness: Harness, tmp_path: Path,
                                                           when: str) -> None:
    h = harness
    h.patient("k1")
    referral = h.referral("k1", priority="urgent")
    child = subprocess.run([sys.executable, str(CHILD), str(write_config(h, tmp_path)),
                            h.clock.now.isoformat(), when], capture_output=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    h.twilio.wait_idle()
    [message] = [m for m in h.rt.ostore.messages_for(referral.id) if m.channel == "sms"]
    assert message.status == "sending" and message.provider_sid is None
    assert len(h.twilio.messages(NY_MOBILE)) == (1 if when == "after" else 0)
    # the killed worker's lease expires; a restarted worker takes the item again
    h.advance(seconds=h.services.work.lease_seconds + 1)
    texts = h.twilio.messages(NY_MOBILE)
    assert len(texts) == 1
    recorded = h.rt.ostore.message(message.id)
    assert recorded.provider_sid == texts[0].sid and recorded.status == "delivered"
    assert recorded.attempts == (1 if when == "after" else 2)
    h.advance(minutes=5)
    assert len(h.twilio.messages(NY_MOBILE)) == 1
