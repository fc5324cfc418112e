"""Patient replies offered to us by outreach (after its own STOP/START/HELP handling):
C / confirm / sí -> the appointment is confirmed; R / reschedule / cambiar -> a new booking link;
cancel / cancelar -> the appointment is cancelled; YES / SÍ to a waitlist offer -> the offer is
taken. A reply we do not understand, or one about nothing we manage, is left to outreach."""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum


class Intent(StrEnum):
    CONFIRM = "confirm"
    RESCHEDULE = "reschedule"
    CANCEL = "cancel"
    ACCEPT = "accept"
    NONE = "none"


WORDS: dict[Intent, frozenset[str]] = {
    Intent.CONFIRM: frozenset({"c", "confirm", "confirmed", "confirmo", "confirmar",
                               "confirmado", "ok"}),
    Intent.RESCHEDULE: frozenset({"r", "reschedule", "change", "cambiar", "cambio",
                                  "reprogramar"}),
    Intent.CANCEL: frozenset({"cancel", "cancelar", "cancela", "cancelo"}),
    Intent.ACCEPT: frozenset({"yes", "y", "si", "sí", "accept", "acepto"}),
}


def parse_intent(text: str) -> Intent:
    """The intent of a short reply: its first word, without accents, case or punctuation."""
    plain = unicodedata.normalize("NFKD", text.strip().lower())
    plain = "".join(ch for ch in plain if not unicodedata.combining(ch))
    words = re.findall(r"[a-z]+", plain)
    if not words or len(words) > 4:
        return Intent.NONE
    for intent, vocabulary in WORDS.items():
        if words[0] in vocabulary:
            return intent
    return Intent.NONE


def context_parts(reply_context: str) -> tuple[str, str]:
    """("offer", id) from "scheduling:offer:<id>"; ("", "") for other contexts."""
    prefix, _, rest = (reply_context or "").partition(":")
    if prefix != "scheduling":
        return "", ""
    kind, _, value = rest.partition(":")
    return kind, value
