"""Sandboxes for the demo and the tests: THE TWILIO SANDBOX (a fake SMS and voice gateway,
because the real one cannot run here) and a real SMTP server (aiosmtpd) that captures mail."""

from outreach.sandbox.smtp import MailCapture
from outreach.sandbox.twilio import SandboxRules, TwilioSandbox, twilio_signature

__all__ = ["MailCapture", "SandboxRules", "TwilioSandbox", "twilio_signature"]
