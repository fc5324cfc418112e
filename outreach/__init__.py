"""Patient outreach: channels (SMS, email, voice, coordinator call tasks), escalation ladders,
the pure send/skip rule engine (quiet hours, caps, consent), templates, inbound replies and the
sandbox that stands in for the SMS gateway. See docs/outreach.md."""
