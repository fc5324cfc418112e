"""Email over SMTP with the standard library: STARTTLS or implicit TLS (RFC 8314: TLS required,
never credentials in the clear), authentication, multipart text and HTML, a List-Unsubscribe
header with a one-click HTTPS address (RFC 2369, RFC 8058) beside a mailto, attachments (the
.ics of a booking), and a refusal at submission recorded as a bounce.

`security = "none"` is accepted only towards a loopback server (the demo's aiosmtpd).
"""

from __future__ import annotations

import email.policy
import smtplib
import ssl
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from outreach.channels.base import ChannelError, Outgoing, SendResult
from outreach.config import SmtpConfig

LOOPBACK = ("127.0.0.1", "localhost", "::1")
SMTP_POLICY = email.policy.SMTP.clone(max_line_length=998)


class SmtpEmail:
    name = "email"

    def __init__(self, config: SmtpConfig, tls_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self.tls_context = tls_context or ssl.create_default_context()

    def build(self, message: Outgoing) -> EmailMessage:
        # long List-Unsubscribe URLs must stay plain: no folding into encoded words
        email = EmailMessage(policy=SMTP_POLICY)
        email["From"] = self.config.from_address
        email["To"] = message.to
        email["Subject"] = message.subject
        email["Date"] = formatdate(localtime=False)
        domain = self.config.from_address.rpartition("@")[2] or "refloop.local"
        email["Message-ID"] = make_msgid(idstring=message.message_id.replace("-", ""),
                                         domain=domain)
        email["X-Refloop-Message"] = message.message_id
        if message.unsubscribe_url:
            targets = [f"<{message.unsubscribe_url}>"]
            if message.unsubscribe_mailto:
                targets.append(f"<{message.unsubscribe_mailto}>")
            email["List-Unsubscribe"] = ", ".join(targets)
            email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        email.set_content(message.text)
        if message.html:
            email.add_alternative(message.html, subtype="html")
        for attachment in message.attachments:
            maintype, _, subtype = attachment.content_type.partition("/")
            params = {"method": "PUBLISH"} if subtype == "calendar" else {}
            email.add_attachment(attachment.content, maintype=maintype or "application",
                                 subtype=subtype or "octet-stream",
                                 filename=attachment.filename, params=params)
        return email

    def send(self, message: Outgoing) -> SendResult:
        email = self.build(message)
        try:
            with self._connect() as smtp:
                refused = smtp.send_message(email)
        except smtplib.SMTPRecipientsRefused as exc:
            code, why = next(iter(exc.recipients.values()), (0, b""))
            raise ChannelError(f"the mail server refused the address: {code} "
                               f"{_text(why)}", code=str(code), bad_address=True) from exc
        except smtplib.SMTPAuthenticationError as exc:
            raise ChannelError(f"the mail server refused our login ({exc.smtp_code}); check "
                               "[outreach.smtp] username and password", code="auth") from exc
        except smtplib.SMTPResponseException as exc:
            raise ChannelError(f"the mail server answered {exc.smtp_code} "
                               f"{_text(exc.smtp_error)}", code=str(exc.smtp_code),
                               retryable=400 <= exc.smtp_code < 500) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise ChannelError(f"the mail server could not be reached or failed "
                               f"({type(exc).__name__}: {exc})", retryable=True,
                               maybe_sent=isinstance(exc, smtplib.SMTPServerDisconnected)
                               ) from exc
        if refused:
            code, why = next(iter(refused.values()))
            raise ChannelError(f"the mail server refused the address: {code} {_text(why)}",
                               code=str(code), bad_address=True)
        return SendResult(str(email["Message-ID"]), "sent")

    def find_sent(self, message: Outgoing, since: datetime) -> SendResult | None:
        raise ChannelError("SMTP cannot tell whether a message was accepted before a crash",
                           maybe_sent=True)

    def _connect(self) -> smtplib.SMTP:
        config = self.config
        if config.security == "none" and config.host not in LOOPBACK:
            raise smtplib.SMTPNotSupportedError(
                "security = none is allowed only for a server on 127.0.0.1")
        if config.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(config.host, config.port,
                                                  timeout=config.timeout_seconds,
                                                  context=self.tls_context)
        else:
            smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout_seconds)
            if config.security == "starttls":
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    smtp.close()
                    raise smtplib.SMTPNotSupportedError(
                        "the server offers no STARTTLS; refusing to send in the clear")
                smtp.starttls(context=self.tls_context)
                smtp.ehlo()
        if config.username:
            smtp.login(config.username, config.password)
        return smtp


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
