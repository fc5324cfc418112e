"""`refloop outreach send-test --to NUMBER|EMAIL`: one message through the configured channel,
outside any referral and ladder, so IT can check credentials, sender and callbacks."""

from __future__ import annotations

import uuid

from outreach.channels.base import ChannelError, Outgoing
from outreach.contacts import normalise_email, parse_phone
from outreach.runtime import Runtime
from outreach.templates import render


def send_test(rt: Runtime, to: str, *, voice: bool = False, tenant: str = "") -> str:
    """`tenant`: send from that tenant's sender ([[outreach.twilio.senders]])."""
    params = {"practice": rt.config.practice_name, "practice_phone": rt.config.practice_phone}
    if "@" in to:
        address, problem = normalise_email(to)
        channel = "email"
    else:
        address, problem, _zones, _textable = parse_phone(to, rt.config.default_region)
        channel = "voice" if voice else "sms"
    if problem:
        raise ValueError(f"{to}: {problem}")
    sender = rt.channels.get(channel)
    if sender is None:
        raise ValueError(f"no {channel} channel is configured: fill in "
                         + ("[outreach.smtp]" if channel == "email" else "[outreach.twilio]"))
    source_key = ""
    if tenant:
        found = next((s for s in rt.config.twilio.senders if s.tenant == tenant), None)
        if found is None or not found.sources:
            raise ValueError(f"no [[outreach.twilio.senders]] for tenant {tenant!r}")
        source_key = f"{found.sources[0]}|send-test"
    rendered = render("test", channel, "en", params)
    message_id = f"test-{uuid.uuid4()}"
    outgoing = Outgoing(message_id=message_id, channel=channel, to=address,
                        text=rendered.text, subject=rendered.subject, html=rendered.html,
                        voice_url=f"{rt.base_url}/outreach/twilio/voice/{message_id}",
                        source_key=source_key)
    try:
        result = sender.send(outgoing)
    except ChannelError as exc:
        raise ValueError(f"the test {channel} to {address} failed: {exc}") from exc
    return (f"test {channel} to {address} handed to the provider: id {result.provider_sid}, "
            f"status {result.status}")
