"""What an inbound reply asks for: opt out, opt back in, help, or something for a person.

Opt-out follows the FCC's 2024 revocation rule (47 CFR 64.1200(a)(10), in force since 11 April
2025): any reasonable means, and the words stop, quit, end, revoke, opt out, cancel and
unsubscribe revoke when sent alone. Twilio's default keywords add STOPALL and OPTOUT. Here:

- the whole reply (any case, punctuation and polite filler ignored) is one of those keywords;
- the reply starts with a strong keyword (STOP, STOPALL, UNSUBSCRIBE, REVOKE, OPT OUT,
  OPTOUT) followed by other words ("stop texting me", "STOP please!");
- or the reply contains an unambiguous phrase ("stop texting", "do not text", "remove me").

A negation before the keyword ("don't stop", "never stop") is not an opt-out, and the weak
keywords (CANCEL, END, QUIT) count only alone, so "cancel my appointment" is left to whoever
handles appointments. START and UNSTOP opt back in; HELP and INFO ask for help.
"""

from __future__ import annotations

import re
import unicodedata

OPT_OUT, OPT_OUT_ALL, OPT_IN, HELP = "opt-out", "opt-out-all", "opt-in", "help"

STRONG = {"STOP", "UNSUBSCRIBE", "REVOKE", "OPTOUT", "STOPALL", "PARAR", "ALTO"}
WEAK = {"CANCEL", "END", "QUIT", "CANCELAR", "BAJA"}
OPT_IN_WORDS = {"START", "UNSTOP"}
HELP_WORDS = {"HELP", "INFO", "AYUDA"}
#: words that may stand beside a keyword without changing what it means
FILLER = {"PLEASE", "PLS", "NOW", "IT", "ALL", "THANKS", "THANK", "YOU", "ME", "TEXTS", "TEXT",
          "MESSAGES", "MSGS", "SMS", "CALLS", "OK", "POR", "FAVOR", "GRACIAS"}
NEGATIONS = {"DONT", "DO NOT", "NEVER", "CANT", "CANNOT", "WONT", "NOT", "NO"}
PHRASES = ("STOP TEXTING", "STOP MESSAGING", "STOP SENDING", "STOP CALLING", "STOP CONTACTING",
           "DO NOT TEXT", "DONT TEXT", "DO NOT CALL", "DONT CALL", "DO NOT CONTACT",
           "DONT CONTACT", "REMOVE ME", "TAKE ME OFF", "LEAVE ME ALONE", "OPT ME OUT",
           "UNSUBSCRIBE", "OPT OUT", "NO MAS MENSAJES", "NO ME ESCRIBAN")


def normalise(text: str) -> list[str]:
    """Upper-case words without punctuation; "opt out" and "opt-out" become OPTOUT,
    "don't" becomes DONT. Look-alikes count as their letters: full-width and other
    compatibility forms (NFKC), and invisible format characters (zero-width spaces) left out."""
    plain = "".join(ch for ch in unicodedata.normalize("NFKC", text)
                    if unicodedata.category(ch) != "Cf")
    upper = plain.upper().replace("\u2019", "'").replace("'", "")
    upper = re.sub(r"\bOPT[\s\-_]*OUT\b", "OPTOUT", upper)
    upper = re.sub(r"\bSTOP[\s\-_]*ALL\b", "STOPALL", upper)
    return re.findall(r"[A-ZÁÉÍÓÚÑÜ0-9]+", upper)


def classify(text: str) -> str | None:
    """OPT_OUT, OPT_OUT_ALL, OPT_IN, HELP, or None (a reply for the referral's people)."""
    words = normalise(text)
    if not words:
        return None
    meaningful = [w for w in words if w not in FILLER]
    if len(meaningful) == 1:
        only = meaningful[0]
        if only == "STOPALL":
            return OPT_OUT_ALL
        if only in STRONG or only in WEAK:
            return OPT_OUT
        if only in OPT_IN_WORDS:
            return OPT_IN
        if only in HELP_WORDS:
            return HELP
    if words[0] in STRONG:
        return OPT_OUT_ALL if words[0] == "STOPALL" else OPT_OUT
    joined = " ".join(words).replace("OPTOUT", "OPT OUT")
    for phrase in PHRASES:
        at = f" {joined} ".find(f" {phrase} ")
        if at >= 0 and not _negated(joined[:at]):
            return OPT_OUT
    return None


def _negated(before: str) -> bool:
    tail = before.split()[-2:]
    return bool(tail) and (tail[-1] in NEGATIONS or " ".join(tail) in NEGATIONS)


#: what a reply that is not a keyword asks for, for outreach's own handling
BOOKING_WORDS = {"BOOK", "SCHEDULE", "APPOINTMENT", "YES", "Y", "SI", "SÍ", "AGENDAR", "CITA",
                 "LINK"}
CALL_PHRASES = ("CALL ME", "PLEASE CALL", "GIVE ME A CALL", "LLAMENME", "LLAMAME", "LLÁMAME",
                "LLÁMENME")


def intent(text: str) -> str:
    """'book', 'call-me' or 'free-text' for a reply that is no keyword."""
    words = normalise(text)
    joined = " ".join(words)
    if any(f" {p} " in f" {joined} " for p in CALL_PHRASES) or words == ["CALL"]:
        return "call-me"
    if set(words) & {"CANCEL", "CANCELAR", "NOT", "NO", "DONT", "NEVER"}:
        return "free-text"
    if words and (words[0] in BOOKING_WORDS or (len(words) <= 4 and
                                                 BOOKING_WORDS & set(words))):
        return "book"
    return "free-text"
