"""The `[loop]` settings as typed values: the specialists whose consult notes are chased (and
how), the referring providers kept informed (and through which channel), the program clocks,
and the secure links. Every error names the key and says what to use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from referrals import closed_loop as loop
from referrals.errors import RefloopError

#: chase steps, in the order a default ladder takes them, and their default day
STEPS = {"fhir-task": 1.0, "v2-status": 3.0, "email": 5.0, "coordinator": 10.0}
CHANNELS = ("fhir", "v2", "email", "none")
NOTE_DELIVERIES = ("fhir", "v2", "link", "none")


class LoopConfigError(RefloopError):
    """A wrong [loop] setting; the message names the key and what to use."""


@dataclass(frozen=True)
class Step:
    step: str
    after_days: float


@dataclass(frozen=True)
class Specialist:
    """Where a referral's consult note comes from, and how to chase it."""

    name: str
    specialties: tuple[str, ...] = ()
    performers: tuple[str, ...] = ()
    fhir_base: str = ""
    v2_partner: str = ""
    email: str = ""
    ladder: tuple[Step, ...] = ()

    def matches(self, specialty: str, performer: str) -> bool:
        if performer and performer in self.performers:
            return True
        return bool(specialty) and specialty.strip().lower() in self.specialties


@dataclass(frozen=True)
class Referrer:
    """A referring provider (or practice, or EHR) and how they hear from us."""

    name: str
    requesters: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    channel: str = "none"
    fhir_base: str = ""
    task_updates: bool = False
    v2_partner: str = ""
    email: str = ""
    note: str = "none"
    milestones: tuple[str, ...] = loop.MILESTONES
    digest_hour: int = 7
    time_zone: str = "UTC"

    def matches(self, requester: str, server: str) -> bool:
        if requester and requester in self.requesters:
            return True
        return "*" in self.servers or (bool(server) and server in self.servers)


@dataclass(frozen=True)
class Program:
    """Which referrals get a program clock, and how long it runs."""

    program: str
    days: float
    goal: str
    specialties: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()
    encounter_classes: tuple[str, ...] = ()
    reason_codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoopConfig:
    specialists: tuple[Specialist, ...] = ()
    referrers: tuple[Referrer, ...] = ()
    programs: tuple[Program, ...] = ()
    #: with no specialist matching, a coordinator task this many days after the visit
    chase_days: float = 7.0
    #: how often the Task at a specialist's FHIR endpoint is read again while chasing
    poll_hours: float = 6.0
    #: secure links (the specialist's upload link, the referrer's note link)
    link_days: float = 14.0
    link_attempts: int = 5
    source_attempts: int = 20
    #: below the HTTP edge's own cap (http_max_body_bytes, 16 MiB by default)
    max_upload_bytes: int = 10 * 1024 * 1024
    #: how long a note page stays open after the date-of-birth check
    session_minutes: float = 15.0
    cookie_name: str = "refloop_note"
    #: what we call ourselves to providers (mail, FHIR Communication.sender)
    sender_name: str = "Refloop referral service"

    def specialist_for(self, specialty: str, performer: str) -> Specialist | None:
        return next((s for s in self.specialists if s.matches(specialty, performer)), None)

    def referrer_for(self, requester: str, server: str) -> Referrer | None:
        return next((r for r in self.referrers if r.matches(requester, server)), None)

    def specialist(self, name: str) -> Specialist | None:
        return next((s for s in self.specialists if s.name == name), None)

    def referrer(self, name: str) -> Referrer | None:
        return next((r for r in self.referrers if r.name == name), None)


def from_section(section: dict[str, Any]) -> LoopConfig:
    known = {"specialists", "referrers", "programs", "chase_days", "poll_hours", "link_days",
             "link_attempts", "source_attempts", "max_upload_bytes", "session_minutes",
             "cookie_name", "sender_name"}
    _unknown(section, known, "[loop]")
    plain: dict[str, Any] = {}
    for key in ("chase_days", "poll_hours", "link_days", "session_minutes"):
        if key in section:
            plain[key] = _number(section[key], f"[loop] {key}", minimum=0.0)
    for key in ("link_attempts", "source_attempts", "max_upload_bytes"):
        if key in section:
            plain[key] = int(_number(section[key], f"[loop] {key}", minimum=1))
    for key in ("cookie_name", "sender_name"):
        if key in section:
            plain[key] = str(section[key])
    specialists = tuple(_specialist(s, n) for n, s in enumerate(_tables(section, "specialists")))
    referrers = tuple(_referrer(r, n) for n, r in enumerate(_tables(section, "referrers")))
    programs = tuple(_program(p, n) for n, p in enumerate(_tables(section, "programs")))
    for kind, names in (("specialists", [s.name for s in specialists]),
                        ("referrers", [r.name for r in referrers])):
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise LoopConfigError(f"[[loop.{kind}]]: the name {twice[0]!r} is used twice")
    return LoopConfig(specialists=specialists, referrers=referrers, programs=programs, **plain)


def _specialist(raw: dict[str, Any], n: int) -> Specialist:
    where = f"[[loop.specialists]] #{n + 1}"
    _unknown(raw, {"name", "specialties", "performers", "fhir_base", "v2_partner", "email",
                   "ladder"}, where)
    name = _name(raw, where)
    fhir_base = str(raw.get("fhir_base", "")).rstrip("/")
    v2_partner = str(raw.get("v2_partner", ""))
    email = str(raw.get("email", ""))
    if email and "@" not in email:
        raise LoopConfigError(f"{where} email {email!r} is not an email address")
    able = {"fhir-task": bool(fhir_base), "v2-status": bool(v2_partner),
            "email": bool(email), "coordinator": True}
    if "ladder" in raw:
        ladder = tuple(_step(s, f"{where} ladder #{i + 1}", able)
                       for i, s in enumerate(raw["ladder"]))
    else:
        ladder = tuple(Step(step, day) for step, day in STEPS.items() if able[step])
    specialties = _words(raw, "specialties", where)
    performers = _words(raw, "performers", where, lower=False)
    if not specialties and not performers:
        raise LoopConfigError(f"{where} ({name}): set specialties or performers (which "
                              "referrals go to this specialist)")
    return Specialist(name=name, specialties=specialties, performers=performers,
                      fhir_base=fhir_base, v2_partner=v2_partner, email=email,
                      ladder=tuple(sorted(ladder, key=lambda s: s.after_days)))


def _step(raw: Any, where: str, able: dict[str, bool]) -> Step:
    if not isinstance(raw, dict):
        raise LoopConfigError(f"{where}: use {{step = \"email\", after_days = 5}}")
    _unknown(raw, {"step", "after_days"}, where)
    step = str(raw.get("step", ""))
    if step not in STEPS:
        raise LoopConfigError(f"{where}: step {step!r}; use one of {', '.join(STEPS)}")
    if not able[step]:
        need = {"fhir-task": "fhir_base", "v2-status": "v2_partner", "email": "email"}[step]
        raise LoopConfigError(f"{where}: step {step} needs the specialist's {need}")
    return Step(step, _number(raw.get("after_days", STEPS[step]), f"{where} after_days",
                              minimum=0.0))


def _referrer(raw: dict[str, Any], n: int) -> Referrer:
    where = f"[[loop.referrers]] #{n + 1}"
    _unknown(raw, {"name", "requesters", "servers", "channel", "fhir_base", "task_updates",
                   "v2_partner", "email", "note", "milestones", "digest_hour", "time_zone"},
             where)
    name = _name(raw, where)
    channel = str(raw.get("channel", "none"))
    if channel not in CHANNELS:
        raise LoopConfigError(f"{where} ({name}) channel {channel!r}; use one of "
                              f"{', '.join(CHANNELS)}")
    default_note = {"fhir": "fhir", "v2": "v2", "email": "link"}.get(channel, "none")
    note = str(raw.get("note", default_note))
    if note not in NOTE_DELIVERIES:
        raise LoopConfigError(f"{where} ({name}) note {note!r}; use one of "
                              f"{', '.join(NOTE_DELIVERIES)}")
    email = str(raw.get("email", ""))
    v2_partner = str(raw.get("v2_partner", ""))
    if (channel == "email" or note == "link") and "@" not in email:
        raise LoopConfigError(f"{where} ({name}): the email channel and note links need "
                              "email = \"...\" (the practice's address)")
    if (channel == "v2" or note == "v2") and not v2_partner:
        raise LoopConfigError(f"{where} ({name}): v2 needs v2_partner = \"APP^FACILITY\" "
                              "(an [hl7.senders] entry with an outbound address)")
    milestones = _words(raw, "milestones", where) if "milestones" in raw else loop.MILESTONES
    unknown = sorted(set(milestones) - set(loop.MILESTONES))
    if unknown:
        raise LoopConfigError(f"{where} ({name}) milestones {unknown}; known: "
                              f"{', '.join(loop.MILESTONES)}")
    hour = int(_number(raw.get("digest_hour", 7), f"{where} digest_hour", minimum=0))
    if hour > 23:
        raise LoopConfigError(f"{where} digest_hour {hour}: use 0-23 (local time)")
    zone = str(raw.get("time_zone", "UTC"))
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise LoopConfigError(f"{where} time_zone {zone!r} is not an IANA time zone "
                              "(e.g. America/New_York)") from exc
    requesters = _words(raw, "requesters", where, lower=False)
    servers = tuple(s.rstrip("/") for s in _words(raw, "servers", where, lower=False))
    if not requesters and not servers:
        raise LoopConfigError(f"{where} ({name}): set requesters or servers (whose referrals "
                              "these are; servers = [\"*\"] for every referral)")
    return Referrer(name=name, requesters=requesters, servers=servers, channel=channel,
                    fhir_base=str(raw.get("fhir_base", "")).rstrip("/"),
                    task_updates=bool(raw.get("task_updates", False)), v2_partner=v2_partner,
                    email=email, note=note, milestones=tuple(milestones), digest_hour=hour,
                    time_zone=zone)


def _program(raw: dict[str, Any], n: int) -> Program:
    where = f"[[loop.programs]] #{n + 1}"
    _unknown(raw, {"program", "days", "specialties", "codes", "encounter_classes",
                   "reason_codes"}, where)
    program = str(raw.get("program", ""))
    if program not in loop.PROGRAMS:
        raise LoopConfigError(f"{where} program {program!r}; use one of "
                              f"{', '.join(loop.PROGRAMS)}")
    default_days = 30.0 if program == loop.TEAM else 14.0
    days = _number(raw.get("days", default_days), f"{where} days", minimum=0.0)
    specialties = _words(raw, "specialties", where)
    if not specialties:
        raise LoopConfigError(f"{where} ({program}): set specialties (the referrals it "
                              "applies to, e.g. [\"primary care\"])")
    return Program(program=program, days=days,
                   goal=loop.GOAL_VISIT if program == loop.TEAM else loop.GOAL_REPORT,
                   specialties=specialties, codes=_words(raw, "codes", where, lower=False),
                   encounter_classes=_words(raw, "encounter_classes", where, lower=False),
                   reason_codes=_words(raw, "reason_codes", where, lower=False))


def _tables(section: dict[str, Any], key: str) -> list[dict[str, Any]]:
    found = section.get(key) or []
    if not isinstance(found, list) or not all(isinstance(t, dict) for t in found):
        raise LoopConfigError(f"[loop] {key}: use [[loop.{key}]] tables")
    return found


def _name(raw: dict[str, Any], where: str) -> str:
    name = str(raw.get("name", "")).strip()
    if not name:
        raise LoopConfigError(f"{where}: name = \"...\" is required")
    return name


def _words(raw: dict[str, Any], key: str, where: str, *, lower: bool = True
           ) -> tuple[str, ...]:
    value = raw.get(key, [])
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list):
        raise LoopConfigError(f"{where} {key}: use a list of strings")
    return tuple(str(v).strip().lower() if lower else str(v).strip() for v in value)


def _number(value: Any, where: str, *, minimum: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise LoopConfigError(f"{where}: {value!r} is not a number") from exc
    if number < minimum:
        raise LoopConfigError(f"{where}: {value!r} must be at least {minimum:g}")
    return number


def _unknown(raw: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise LoopConfigError(f"{where}: unknown keys {unknown}; known: "
                              f"{', '.join(sorted(known))}")


__all__ = ["LoopConfig", "LoopConfigError", "Program", "Referrer", "Specialist", "Step",
           "from_section"]
