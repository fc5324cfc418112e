"""Message templates per purpose and language (English and Spanish shipped), rendered with the
practice's name and the opt-out instructions every message carries.

Minimum necessary content: SMS and voice texts name the practice and the referring clinician
("a referral from Dr. X") and never the diagnosis, procedure or specialty; the link carries the
rest after an identity check. A language without a translation falls back to English and the
rendering says so. SMS are counted in segments (GSM-7 or UCS-2); a text over the configured limit
is retried with look-alike characters and accents GSM-7 lacks replaced, and refused if still too
long.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from outreach import segments

FALLBACK = "en"


@dataclass(frozen=True)
class Template:
    sms: str
    subject: str
    email: str
    voice: str = ""


class TemplateError(Exception):
    """A template cannot be rendered (unknown purpose, missing parameter, too long)."""


#: {purpose: {language: Template}}; {action} is the booking sentence, filled by the renderer
TEMPLATES: dict[str, dict[str, Template]] = {
    "first-contact": {
        "en": Template(
            "{practice}: you have a referral from {referrer}. {action}",
            "Your referral from {referrer}",
            "Hello,\n\n{practice} received a referral for you from {referrer}. {action}\n\n"
            "If you have questions, call us at {practice_phone}.",
            "Hello, this is {practice}. You have a referral from {referrer}. "),
        "es": Template(
            "{practice}: tiene una referencia de {referrer}. {action}",
            "Su referencia de {referrer}",
            "Hola:\n\n{practice} recibió una referencia para usted de {referrer}. {action}\n\n"
            "Si tiene preguntas, llámenos al {practice_phone}.",
            "Hola, le llamamos de {practice}. Tiene una referencia de {referrer}. "),
    },
    "booking-link": {
        "en": Template("{practice}: book your visit here: {link}",
                       "Book your visit", "Hello,\n\nBook your visit with {practice} here: "
                       "{link}\n\nQuestions? Call {practice_phone}."),
        "es": Template("{practice}: reserve su cita aquí: {link}",
                       "Reserve su cita", "Hola:\n\nReserve su cita con {practice} aquí: "
                       "{link}\n\n¿Preguntas? Llame al {practice_phone}."),
    },
    "booking-confirmation": {
        "en": Template("{practice}: your visit is booked for {when} at {location} with "
                       "{clinician}. Details: {link}",
                       "Your visit is booked", "Hello,\n\nYour visit with {practice} is booked "
                       "for {when} at {location} with {clinician}.\n\nDetails and changes: "
                       "{link}\n\nThe calendar file is attached."),
        "es": Template("{practice}: su cita es el {when} en {location} con {clinician}. "
                       "Detalles: {link}",
                       "Su cita está reservada", "Hola:\n\nSu cita con {practice} es el {when} "
                       "en {location} con {clinician}.\n\nDetalles y cambios: {link}\n\n"
                       "Adjuntamos el archivo de calendario."),
    },
    "reschedule-confirmation": {
        "en": Template("{practice}: your visit was moved to {when}. Details: {link}",
                       "Your visit was moved", "Hello,\n\nYour visit with {practice} was moved "
                       "to {when}.\n\nDetails: {link}"),
        "es": Template("{practice}: su cita cambió al {when}. Detalles: {link}",
                       "Su cita cambió", "Hola:\n\nSu cita con {practice} cambió al {when}.\n\n"
                       "Detalles: {link}"),
    },
    "cancel-confirmation": {
        "en": Template("{practice}: your visit was cancelled. To book again call "
                       "{practice_phone}.", "Your visit was cancelled",
                       "Hello,\n\nYour visit with {practice} was cancelled. To book again, call "
                       "{practice_phone}."),
        "es": Template("{practice}: su cita fue cancelada. Para reservar de nuevo llame al "
                       "{practice_phone}.", "Su cita fue cancelada",
                       "Hola:\n\nSu cita con {practice} fue cancelada. Para reservar de nuevo, "
                       "llame al {practice_phone}."),
    },
    "reminder": {
        "en": Template("{practice}: reminder of your visit {when} at {location}. Reply C to "
                       "confirm or R to reschedule. {link}", "Reminder of your visit",
                       "Hello,\n\nThis is a reminder of your visit with {practice} on {when} at "
                       "{location}.\n\nConfirm or reschedule: {link}",
                       "Hello, this is {practice} with a reminder of your visit on {when}. "),
        "es": Template("{practice}: le recordamos su cita el {when} en {location}. Responda C "
                       "para confirmar o R para cambiarla. {link}", "Recordatorio de su cita",
                       "Hola:\n\nLe recordamos su cita con {practice} el {when} en {location}."
                       "\n\nConfirme o cambie la cita: {link}",
                       "Hola, le llamamos de {practice} para recordarle su cita el {when}. "),
    },
    "preparation": {
        "en": Template("{practice}: how to prepare for your visit {when}: {instructions_link}",
                       "Preparing for your visit", "Hello,\n\nPlease read how to prepare for "
                       "your visit with {practice} on {when}: {instructions_link}"),
        "es": Template("{practice}: cómo prepararse para su cita el {when}: "
                       "{instructions_link}", "Cómo prepararse para su cita",
                       "Hola:\n\nLea cómo prepararse para su cita con {practice} el {when}: "
                       "{instructions_link}"),
    },
    "no-show-recovery": {
        "en": Template("{practice}: we missed you at your visit. Book a new time: {link}",
                       "We missed you", "Hello,\n\nWe missed you at your visit with {practice}. "
                       "Book a new time here: {link}"),
        "es": Template("{practice}: no pudo venir a su cita. Reserve otra hora: {link}",
                       "No pudo venir a su cita", "Hola:\n\nNo pudo venir a su cita con "
                       "{practice}. Reserve otra hora aquí: {link}"),
    },
    "waitlist-offer": {
        "en": Template("{practice}: an earlier visit is open on {when}. Reply YES to take it or "
                       "see {link}", "An earlier visit is open", "Hello,\n\nAn earlier visit "
                       "with {practice} is open on {when}. Take it here: {link}"),
        "es": Template("{practice}: hay una cita antes, el {when}. Responda YES para tomarla o "
                       "vea {link}", "Hay una cita antes", "Hola:\n\nHay una cita antes con "
                       "{practice} el {when}. Tómela aquí: {link}"),
    },
    "coordinator-callback": {
        "en": Template("{practice}: our team will call you soon about your referral from "
                       "{referrer}. Questions? Call {practice_phone}.", "We will call you",
                       "Hello,\n\nOur team at {practice} will call you soon about your referral "
                       "from {referrer}."),
        "es": Template("{practice}: nuestro equipo le llamará pronto por su referencia de "
                       "{referrer}. ¿Preguntas? Llame al {practice_phone}.", "Le llamaremos",
                       "Hola:\n\nNuestro equipo de {practice} le llamará pronto por su "
                       "referencia de {referrer}."),
    },
    "opt-out-confirmation": {
        "en": Template("{practice}: you will get no more {channel_name}. Reply START to "
                       "receive them again.", "You are unsubscribed",
                       "You will get no more emails from {practice}."),
        "es": Template("{practice}: no recibirá más {channel_name}. Responda START para "
                       "recibirlos de nuevo.", "Ya no recibirá correos",
                       "No recibirá más correos de {practice}."),
    },
    "opt-in-confirmation": {
        "en": Template("{practice}: you will receive messages again.", "Messages resumed",
                       "You will receive messages from {practice} again."),
        "es": Template("{practice}: volverá a recibir mensajes.", "Mensajes reanudados",
                       "Volverá a recibir mensajes de {practice}."),
    },
    "help": {
        "en": Template("{practice}: for help call {practice_phone}.", "Help",
                       "For help, call {practice} at {practice_phone}."),
        "es": Template("{practice}: para ayuda llame al {practice_phone}.", "Ayuda",
                       "Para ayuda, llame a {practice} al {practice_phone}."),
    },
    "test": {
        "en": Template("{practice}: this is a test message from Refloop.",
                       "Refloop test message", "This is a test message from Refloop for "
                       "{practice}.", "This is a test call from Refloop for {practice}. "),
    },
}

ACTION = {"en": ("Book online: {link}", "Reply BOOK or call {practice_phone} to schedule."),
          "es": ("Reserve en línea: {link}", "Responda BOOK o llame al {practice_phone} para "
                 "reservar.")}
SMS_FOOTER = {"en": "Reply STOP to opt out.", "es": "Responda STOP para no recibir más."}
VOICE_KEYS = {"en": "Press 1 to talk to our scheduling team. Press 2 to get a text with a link "
                    "to book. Press 9 to stop these calls.",
              "es": "Oprima 1 para hablar con nuestro equipo. Oprima 2 para recibir un mensaje "
                    "con un enlace para reservar. Oprima 9 para no recibir más llamadas."}
EMAIL_FOOTER = {"en": "To stop these emails: {unsubscribe}", "es": "Para no recibir más "
                "correos: {unsubscribe}"}
CHANNEL_NAMES = {"en": {"sms": "texts", "voice": "calls", "email": "emails"},
                 "es": {"sms": "mensajes", "voice": "llamadas", "email": "correos"}}
#: purposes that answer the patient (or test the channel) and carry no opt-out footer
ANSWERS = {"opt-out-confirmation", "opt-in-confirmation", "help", "test"}


@dataclass(frozen=True)
class Rendered:
    purpose: str
    language: str
    requested_language: str
    channel: str
    text: str
    subject: str = ""
    html: str = ""
    encoding: str = ""
    segments: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def fell_back(self) -> bool:
        return self.language != self.requested_language


def render(purpose: str, channel: str, language: str, params: dict[str, str], *,
           segment_limit: int = 2) -> Rendered:
    """The message for one channel; raises TemplateError with what is wrong."""
    by_language = TEMPLATES.get(purpose)
    if by_language is None:
        raise TemplateError(f"no template for purpose {purpose!r}; known: "
                            f"{', '.join(sorted(TEMPLATES))}")
    chosen = language if language in by_language else FALLBACK
    notes = [] if chosen == language else [
        f"no {language!r} translation of {purpose}: sent in English"]
    template = by_language[chosen]
    values = _values(params, chosen, channel)
    if channel == "sms":
        text = _fill(template.sms, values, purpose)
        if purpose not in ANSWERS:
            text = f"{text} {SMS_FOOTER[_lang(chosen)]}"
        return _counted(Rendered(purpose, chosen, language, channel, text, notes=notes),
                        segment_limit)
    if channel == "voice":
        script = _fill(template.voice or template.sms.split(": ", 1)[-1], values, purpose)
        return Rendered(purpose, chosen, language, channel, script, notes=notes)
    body = _fill(template.email, values, purpose)
    if purpose not in ANSWERS:
        body += "\n\n" + _fill(EMAIL_FOOTER[_lang(chosen)], values, purpose)
    subject = _fill(template.subject, values, purpose)
    return Rendered(purpose, chosen, language, channel, body, subject=subject,
                    html=to_html(body), notes=notes)


def voice_keys(language: str) -> str:
    return VOICE_KEYS[_lang(language)]


def to_html(text: str) -> str:
    """The plain text as simple HTML paragraphs, links made clickable."""
    paragraphs = []
    for block in text.split("\n\n"):
        escaped = html.escape(block).replace("\n", "<br>")
        escaped = re.sub(r"(https?://[^\s<]+)", r'<a href="\1">\1</a>', escaped)
        paragraphs.append(f"<p>{escaped}</p>")
    return "<!doctype html><html><body>" + "".join(paragraphs) + "</body></html>"


def _values(params: dict[str, str], language: str, channel: str) -> dict[str, str]:
    values = dict(params)
    lang = _lang(language)
    if "action" not in values:
        template = ACTION[lang][0] if values.get("link") else ACTION[lang][1]
        values["action"] = template.format_map(_Strict(values, "first-contact"))
    values.setdefault("channel_name", CHANNEL_NAMES[lang].get(values.get("channel", channel),
                                                               "messages"))
    return values


def _fill(text: str, values: dict[str, str], purpose: str) -> str:
    return text.format_map(_Strict(values, purpose))


class _Strict(dict[str, str]):
    def __init__(self, values: dict[str, str], purpose: str) -> None:
        super().__init__(values)
        self.purpose = purpose

    def __missing__(self, key: str) -> str:
        raise TemplateError(f"the {self.purpose} template needs the parameter {key!r}")


def _counted(message: Rendered, limit: int) -> Rendered:
    counted = segments.count(message.text)
    if counted.count > limit:
        plain = segments.to_gsm7(message.text)
        replaced = segments.count(plain)
        if replaced.count > limit:
            raise TemplateError(f"the {message.purpose} SMS takes {counted.count} segments "
                                f"({counted.encoding}), more than the limit of {limit}")
        return Rendered(**{**message.__dict__, "text": plain, "encoding": replaced.encoding,
                           "segments": replaced.count,
                           "notes": [*message.notes, f"accents replaced to fit {limit} "
                                     f"segments ({counted.count} as {counted.encoding})"]})
    return Rendered(**{**message.__dict__, "encoding": counted.encoding,
                       "segments": counted.count})


def _lang(language: str) -> str:
    return language if language in ACTION else FALLBACK


def check_minimum_necessary(text: str, forbidden: list[str]) -> str:
    """The first forbidden term (diagnosis, procedure, specialty) found in `text`, or ""."""
    lowered = text.lower()
    for term in forbidden:
        term = term.strip().lower()
        if len(term) >= 4 and re.search(rf"\b{re.escape(term)}\b", lowered):
            return term
    return ""
