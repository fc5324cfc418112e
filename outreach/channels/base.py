"""The channel interface: send one message, and find out whether a message we may have sent
before a crash reached the provider. A health system adds a channel by implementing it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True)
class Outgoing:
    message_id: str
    channel: str
    to: str
    text: str
    language: str = "en"
    subject: str = ""
    html: str = ""
    #: where the provider reports delivery (carries our message id: reconciliation by callback)
    status_callback: str = ""
    #: voice: where the provider fetches the call's TwiML
    voice_url: str = ""
    unsubscribe_url: str = ""
    unsubscribe_mailto: str = ""
    attachments: tuple[Attachment, ...] = field(default_factory=tuple)
    #: the referral's source key: its tenant, and so the sender (Twilio: per tenant)
    source_key: str = ""


@dataclass(frozen=True)
class SendResult:
    provider_sid: str
    status: str
    segments: int = 0


class ChannelError(Exception):
    """The provider refused or failed. `bad_address`: the contact point is wrong (mark it
    failing, move on); `opted_out`: the provider holds an opt-out; `retryable`: try later;
    `maybe_sent`: the outcome is unknown (a time-out), so a retry must reconcile first."""

    def __init__(self, message: str, *, code: str = "", retryable: bool = False,
                 bad_address: bool = False, opted_out: bool = False,
                 maybe_sent: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.bad_address = bad_address
        self.opted_out = opted_out
        self.maybe_sent = maybe_sent


class Channel(Protocol):
    name: str

    def send(self, message: Outgoing) -> SendResult:
        """Hand the message to the provider; raises ChannelError."""
        ...

    def find_sent(self, message: Outgoing, since: datetime) -> SendResult | None:
        """The provider's record of `message` if it took it since `since`, None if it surely did
        not. Raises ChannelError(retryable=True) when the provider could not be asked this time
        (ask again later), and ChannelError(maybe_sent=True) without `retryable` when this
        channel can never tell (SMTP keeps no record we can query)."""
        ...
