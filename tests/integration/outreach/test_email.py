"""The SMTP channel against a real server (aiosmtpd): STARTTLS and implicit TLS with AUTH,
multipart text and HTML with List-Unsubscribe, a refused address recorded as a bounce, and no
credentials over a connection without TLS."""

from __future__ import annotations

import pytest
from outreach_harness import Harness

from outreach.channels.base import ChannelError, Outgoing
from outreach.channels.email import SmtpEmail
from outreach.config import SmtpConfig
from outreach.sandbox import MailCapture

MESSAGE = Outgoing(message_id="m-1", channel="email", to="pat@example.org",
                   text="Hello\n\nPlain part.", subject="Your referral",
                   html="<p>Hello</p>", unsubscribe_url="https://r.example/u/TOKEN",
                   unsubscribe_mailto="mailto:unsub@r.example?subject=TOKEN")


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_tls_and_auth(security: str) -> None:
    server = MailCapture(tls="starttls" if security == "starttls" else "implicit",
                         username="clinic", password="s3cret").start()
    try:
        config = SmtpConfig(host="127.0.0.1", port=server.port, security=security,
                            username="clinic", password="s3cret",
                            from_address="Clinic <clinic@refloop.test>")
        result = SmtpEmail(config, tls_context=server.client_context).send(MESSAGE)
        [mail] = server.wait_for(1)
        message = mail.message
        assert result.status == "sent" and message["Message-ID"] == result.provider_sid
        assert message.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain",
                                                                       "text/html"]
        assert message["List-Unsubscribe"] == ("<https://r.example/u/TOKEN>, "
                                               "<mailto:unsub@r.example?subject=TOKEN>")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        wrong = SmtpConfig(**{**config.__dict__, "password": "wrong"})
        with pytest.raises(ChannelError, match="refused our login"):
            SmtpEmail(wrong, tls_context=server.client_context).send(MESSAGE)
    finally:
        server.stop()


def test_no_starttls_means_no_send_and_no_clear_text_to_a_remote_server() -> None:
    server = MailCapture().start()  # plain, no STARTTLS offered
    try:
        config = SmtpConfig(host="127.0.0.1", port=server.port, security="starttls",
                            from_address="clinic@refloop.test")
        with pytest.raises(ChannelError, match="no STARTTLS"):
            SmtpEmail(config).send(MESSAGE)
        assert server.messages == []
        remote = SmtpConfig(host="mail.example.org", port=25, security="none",
                            from_address="clinic@refloop.test")
        with pytest.raises(ChannelError, match=r"only for a server on 127\.0\.0\.1"):
            SmtpEmail(remote).send(MESSAGE)
    finally:
        server.stop()


def test_a_refused_address_is_a_bounce_that_marks_the_contact_failing(harness: Harness) -> None:
    h = harness
    h.patient("e1", phone="", email="nobody@bounce.example.org")
    referral = h.referral("e1")
    h.settle()
    [email] = [m for m in h.rt.ostore.messages_for(referral.id) if m.channel == "email"]
    assert (email.status, email.error_code) == ("not-done", "550")
    assert "refused the address" in email.reason
    assert h.rt.ostore.consent("Patient/e1", ["nobody@bounce.example.org"]).failing == \
        {"email:nobody@bounce.example.org"}
    assert h.mail.messages == []
