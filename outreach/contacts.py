"""A patient's contact points, language and time zones, read from the FHIR Patient.

Patient.telecom is honoured as FHIR defines it: `period` (a point outside its period is not
used), `use` (old numbers are skipped; `mobile` numbers are preferred for SMS, `work` ones come
last) and `rank` (1 is the most preferred; unranked points follow the ranked ones). Phone
numbers are normalised to E.164 with `phonenumbers`; an invalid number, or one `phonenumbers`
knows to be a fixed line, is kept with the reason it cannot take SMS. Email addresses are
checked for syntax with `email-validator` (no DNS look-up at send time).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import PhoneNumberType
from phonenumbers import timezone as phone_timezone

SMS, EMAIL, VOICE = "sms", "email", "voice"
CHANNELS = (SMS, EMAIL, VOICE)

#: types phonenumbers reports for numbers that can take a text (ordinary US numbers are
#: FIXED_LINE_OR_MOBILE: only a live look-up or a failed delivery tells a landline)
TEXTABLE = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE, PhoneNumberType.VOIP,
            PhoneNumberType.PERSONAL_NUMBER, PhoneNumberType.UNKNOWN}
_USE_ORDER = {"mobile": 0, "home": 1, "temp": 2, "": 3, "work": 4}


@dataclass(frozen=True)
class ContactPoint:
    channel: str       # sms | email | voice
    address: str       # E.164 or a normalised email address ("" when unusable)
    raw: str           # as the Patient gives it
    rank: int
    use: str
    problem: str = ""  # why it cannot be used for this channel ("" when usable)

    @property
    def usable(self) -> bool:
        return not self.problem


def parse_phone(raw: str, region: str) -> tuple[str, str, tuple[str, ...], bool]:
    """(E.164 or "", problem, time zones of the number, can take SMS)."""
    try:
        number = phonenumbers.parse(raw, region or None)
    except phonenumbers.NumberParseException as exc:
        return "", f"not a phone number ({exc.args[0] if exc.args else exc})", (), False
    if not phonenumbers.is_valid_number(number):
        return "", "not a valid phone number for its country", (), False
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    kind = phonenumbers.number_type(number)
    zones = tuple(phone_timezone.time_zones_for_number(number))
    return e164, "", zones, kind in TEXTABLE


def normalise_email(raw: str) -> tuple[str, str]:
    """(normalised address or "", problem)."""
    try:
        found = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        return "", f"not a valid email address ({exc})"
    return found.normalized, ""


def contact_points(patient: dict[str, Any] | None, region: str, now: datetime
                   ) -> tuple[list[ContactPoint], tuple[str, ...]]:
    """Usable and unusable contact points per channel, best first, and the zones of the best
    phone number (for the time zone when the address gives none)."""
    found: list[ContactPoint] = []
    zones: tuple[str, ...] = ()
    telecoms = sorted(_current(patient, now), key=_order)
    for telecom in telecoms:
        system, raw = telecom.get("system"), str(telecom.get("value") or "").strip()
        rank, use = int(telecom.get("rank") or 1000), str(telecom.get("use") or "")
        if not raw:
            continue
        if system in ("phone", "sms"):
            e164, problem, number_zones, textable = parse_phone(raw, region)
            zones = zones or number_zones
            sms_problem = problem or ("" if textable else "a fixed line cannot take SMS")
            if system == "sms" or use != "work":
                found.append(ContactPoint(SMS, e164, raw, rank, use, sms_problem))
            if system == "phone":
                found.append(ContactPoint(VOICE, e164, raw, rank, use, problem))
        elif system == "email":
            address, problem = normalise_email(raw)
            found.append(ContactPoint(EMAIL, address, raw, rank, use, problem))
    return found, zones


def language(patient: dict[str, Any] | None) -> str:
    """The preferred language code from Patient.communication ("en" when none is given)."""
    entries = (patient or {}).get("communication") or []
    chosen = next((c for c in entries if c.get("preferred")), entries[0] if entries else None)
    if not chosen:
        return "en"
    for coding in (chosen.get("language") or {}).get("coding") or []:
        if coding.get("code"):
            return str(coding["code"]).split("-")[0].lower()
    text = str((chosen.get("language") or {}).get("text") or "").lower()
    return {"spanish": "es", "español": "es", "english": "en"}.get(text, text[:2] or "en")


def first_name(patient: dict[str, Any] | None) -> str:
    for name in (patient or {}).get("name") or []:
        if name.get("given"):
            return str(name["given"][0])
    return ""


def _current(patient: dict[str, Any] | None, now: datetime) -> list[dict[str, Any]]:
    current = []
    for telecom in (patient or {}).get("telecom") or []:
        if telecom.get("use") == "old":
            continue
        period = telecom.get("period") or {}
        if period.get("start") and _instant(period["start"]) > now:
            continue
        if period.get("end") and _instant(period["end"]) < now:
            continue
        current.append(telecom)
    return current


def _order(telecom: dict[str, Any]) -> tuple[int, int]:
    return int(telecom.get("rank") or 1000), _USE_ORDER.get(str(telecom.get("use") or ""), 3)


def _instant(text: str) -> datetime:
    """A FHIR dateTime as an aware datetime (dates and times without offset are taken as UTC)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)
