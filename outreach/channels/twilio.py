"""Twilio, through its own library (`twilio`): SMS through the Messaging API, calls through the
Voice API with TwiML built by the library, and the validator of `X-Twilio-Signature`.

The REST address is Twilio's unless `api_base_url` is configured (the sandbox in tests and the
demo): the library builds every request as usual and the HTTP client sends it there instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import Gather, VoiceResponse

from outreach.channels.base import ChannelError, Outgoing, SendResult
from outreach.config import TwilioConfig, TwilioSender

TWILIO_API = "https://api.twilio.com"
#: To is not a number that can take the message: move the ladder on, do not retry
BAD_ADDRESS = {"21211", "21214", "21217", "21401", "21407", "21408", "21612", "21614",
               "13224", "30005", "30006"}
OPTED_OUT = {"21610"}
VOICES = {"en": ("Polly.Joanna", "en-US"), "es": ("Polly.Lupe", "es-US")}
CALL_EVENTS = ["initiated", "ringing", "answered", "completed"]


class _RoutedHttpClient(TwilioHttpClient):
    """Sends the library's requests to `base_url` instead of api.twilio.com."""

    def __init__(self, base_url: str, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if self.base_url and url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API):]
        return super().request(method, url, *args, **kwargs)


def make_client(config: TwilioConfig) -> Client:
    http = _RoutedHttpClient(config.api_base_url, config.timeout_seconds)
    return Client(config.account_sid, config.auth_token, http_client=http)


class TwilioSms:
    name = "sms"

    def __init__(self, config: TwilioConfig, client: Client | None = None) -> None:
        self.config = config
        self.client = client or make_client(config)

    def send(self, message: Outgoing) -> SendResult:
        sender = _sender(self.config, message)
        with _translated("SMS"):
            created = self.client.messages.create(
                to=message.to, body=message.text, status_callback=message.status_callback,
                **sender.sms)
        return SendResult(str(created.sid), str(created.status or "queued"),
                          int(created.num_segments or 0))

    def find_sent(self, message: Outgoing, since: datetime) -> SendResult | None:
        with _translated("SMS look-up"):
            recent = self.client.messages.list(to=message.to, limit=50)
        for found in recent:
            created = found.date_created
            if found.body == message.text and (created is None or
                                               created >= since - timedelta(minutes=2)):
                return SendResult(str(found.sid), str(found.status))
        return None


class TwilioVoice:
    name = "voice"

    def __init__(self, config: TwilioConfig, client: Client | None = None) -> None:
        self.config = config
        self.client = client or make_client(config)

    def send(self, message: Outgoing) -> SendResult:
        sender = _sender(self.config, message)
        caller = sender.caller or self.config.default_sender.caller
        if not caller:
            raise ChannelError(f"no number to call from for tenant {sender.tenant or 'default'}"
                               ": set voice_from or from_number in [outreach.twilio] or its "
                               "[[outreach.twilio.senders]]", code="no-sender")
        with _translated("call"):
            created = self.client.calls.create(
                to=message.to, from_=caller,
                url=message.voice_url, method="POST", status_callback=message.status_callback,
                status_callback_event=CALL_EVENTS, status_callback_method="POST", timeout=30)
        return SendResult(str(created.sid), str(created.status or "queued"))

    def find_sent(self, message: Outgoing, since: datetime) -> SendResult | None:
        with _translated("call look-up"):
            recent = self.client.calls.list(to=message.to, limit=50)
        for found in recent:
            created = found.date_created
            if created is None or created >= since - timedelta(minutes=2):
                return SendResult(str(found.sid), str(found.status))
        return None


def _sender(config: TwilioConfig, message: Outgoing) -> TwilioSender:
    """The sender of the referral's tenant (by its source key), else the deployment's."""
    sender = config.sender_for(message.source_key)
    if sender is None:
        raise ChannelError(f"no Twilio sender for the referral's source {message.source_key!r}: "
                           "add its tenant under [[outreach.twilio.senders]] or set a default "
                           "messaging_service_sid or from_number in [outreach.twilio]",
                           code="no-sender")
    return sender


def call_twiml(script: str, keys: str, language: str, action_url: str) -> str:
    """The call: the message and the key choices, interruptible by a key press."""
    voice, locale = VOICES.get(language, VOICES["en"])
    response = VoiceResponse()
    gather = Gather(input="dtmf", num_digits=1, action=action_url, method="POST", timeout=6)
    gather.say(f"{script} {keys}", voice=voice, language=locale)
    response.append(gather)
    response.say(_GOODBYE.get(language, _GOODBYE["en"]), voice=voice, language=locale)
    response.hangup()
    return str(response)


def key_twiml(digit: str, language: str, coordinator_line: str) -> str:
    """The answer to a key press: 1 connects to the coordinators, 2 and 9 confirm."""
    voice, locale = VOICES.get(language, VOICES["en"])
    lang = language if language in _KEY_TEXT else "en"
    response = VoiceResponse()
    if digit == "1" and coordinator_line:
        response.say(_KEY_TEXT[lang]["1"], voice=voice, language=locale)
        response.dial(coordinator_line)
        return str(response)
    response.say(_KEY_TEXT[lang].get(digit, _GOODBYE[lang]), voice=voice, language=locale)
    response.hangup()
    return str(response)


def empty_twiml() -> str:
    return str(VoiceResponse()).replace("<Response />", "<Response/>")


def signature_valid(auth_token: str, url: str, params: Mapping[str, Any],
                    signature: str) -> bool:
    """Twilio's own check of X-Twilio-Signature over the public URL and the form fields."""
    if not auth_token or not signature:
        return False
    return bool(RequestValidator(auth_token).validate(url, params, signature))


_GOODBYE = {"en": "Goodbye.", "es": "Adiós."}
_KEY_TEXT = {
    "en": {"1": "Connecting you to our scheduling team.",
           "2": "We will text you a link to book. Goodbye.",
           "9": "You will not receive these calls anymore. Goodbye."},
    "es": {"1": "Le comunicamos con nuestro equipo.",
           "2": "Le enviaremos un mensaje con un enlace para reservar. Adiós.",
           "9": "No recibirá más estas llamadas. Adiós."},
}


class _translated:
    """Turn the library's and the network's errors into ChannelError."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, _tb: Any) -> None:
        if exc is None:
            return
        if isinstance(exc, TwilioRestException):
            code = str(exc.code or "")
            status = int(exc.status or 0)
            raise ChannelError(
                f"Twilio refused the {self.what}: HTTP {status}, error {code or '-'}",
                code=code, bad_address=code in BAD_ADDRESS, opted_out=code in OPTED_OUT,
                retryable=status == 429 or status >= 500 or code == "20429") from exc
        if isinstance(exc, requests.RequestException):
            raise ChannelError(f"Twilio did not answer the {self.what} ({type(exc).__name__})",
                               retryable=True, maybe_sent=True) from exc
