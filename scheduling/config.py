"""The `[scheduling]` table, typed: the patient link, reminders, no-show recovery, the waitlist,
and one `[[scheduling.destinations]]` entry per place whose calendar patients book into.

```toml
[scheduling]
link_days = 14                 # a patient link expires after this many days
dob_attempts_per_link = 5      # wrong dates of birth before the link locks
dob_attempts_per_source = 20   # wrong dates of birth per client address and hour
session_minutes = 20           # the patient's session cookie lives this long
reminder_days = [7, 2, 1]      # the reminder ladder (days before the visit)
reminder_hour = 10             # local hour at which a reminder is due
noshow_grace_minutes = 120     # after start + grace with no arrived/fulfilled: a no-show
recovery_days = [0, 3, 7]      # the no-show (and cancellation) recovery ladder
waitlist_min_days = 7          # the waitlist is offered when the visit is further out than this
offers_per_slot = 3            # waiting patients offered one freed slot at once
offer_hours = 12               # an offer expires after this
slots_per_page = 6
search_days = 120              # how far ahead slots are searched

[scheduling.reminders_by_specialty]
gastroenterology = [10, 3, 1]

[[scheduling.destinations]]
name = "cardiology"
specialties = ["cardiology"]            # referral specialty (case-insensitive); or:
performers = ["Organization/cardio"]    # the referral's performer
source = "fhir"                          # fhir | ihe | smart-links | hl7v2
fhir_base = "https://ehr.example.org/fhir"
schedule_actors = ["Practitioner/12"]    # Schedule?actor=...
service_type = "http://snomed.info/sct|394579002"
time_zone = "America/Chicago"
preparation = "colonoscopy"             # a [scheduling.preparation.<name>] entry

[scheduling.preparation.colonoscopy]
questionnaire = "fixtures/scheduling/colonoscopy-intake.json"
instructions_en = "Low-fibre diet for 3 days ..."
instructions_es = "Dieta baja en fibra durante 3 días ..."
reminder_days = [3, 1]
```
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from referrals.errors import RefloopError

SOURCES = ("fhir", "ihe", "smart-links", "hl7v2")


class SchedulingConfigError(RefloopError):
    """A `[scheduling]` entry is wrong; the message says which key and what to use."""


@dataclass(frozen=True)
class Preparation:
    name: str
    questionnaire: dict[str, Any] | None = None
    instructions: dict[str, str] = field(default_factory=dict)  # language -> text
    reminder_days: tuple[int, ...] = ()

    def instructions_for(self, language: str) -> str:
        return self.instructions.get(language) or self.instructions.get("en", "")


@dataclass(frozen=True)
class Destination:
    name: str
    source: str = "fhir"
    specialties: tuple[str, ...] = ()
    performers: tuple[str, ...] = ()
    fhir_base: str = ""
    schedule_actors: tuple[str, ...] = ()
    service_type: str = ""
    specialty_code: str = ""
    location: str = ""
    manifest_url: str = ""
    states: tuple[str, ...] = ()
    hl7_partner: str = ""
    time_zone: str = "UTC"
    preparation: str = ""
    phone: str = ""
    display: str = ""
    #: create a Subscription on the EHR for no-shows and cancellations at the first booking
    subscribe: bool = True
    refresh_minutes: float = 5.0

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def matches(self, specialty: str, performer: str) -> bool:
        if self.performers and performer in self.performers:
            return True
        wanted = {s.casefold() for s in self.specialties}
        return bool(wanted) and specialty.casefold() in wanted


@dataclass(frozen=True)
class SchedulingConfig:
    link_days: float = 14.0
    dob_attempts_per_link: int = 5
    dob_attempts_per_source: int = 20
    session_minutes: float = 20.0
    cookie_name: str = "refloop_p"
    reminder_days: tuple[int, ...] = (7, 2, 1)
    reminder_hour: int = 10
    reminders_by_specialty: dict[str, tuple[int, ...]] = field(default_factory=dict)
    noshow_grace_minutes: float = 120.0
    noshow_poll_minutes: float = 15.0
    recovery_days: tuple[int, ...] = (0, 3, 7)
    waitlist_min_days: float = 7.0
    offers_per_slot: int = 3
    offer_hours: float = 12.0
    slots_per_page: int = 6
    search_days: int = 120
    http_timeout_seconds: float = 10.0
    destinations: tuple[Destination, ...] = ()
    preparations: dict[str, Preparation] = field(default_factory=dict)

    def destination_for(self, specialty: str, performer: str) -> Destination | None:
        """The first destination whose performers or specialties match the referral."""
        return next((d for d in self.destinations if d.matches(specialty, performer)), None)

    def destination(self, name: str) -> Destination | None:
        return next((d for d in self.destinations if d.name == name), None)

    def ladder_for(self, specialty: str) -> tuple[int, ...]:
        return self.reminders_by_specialty.get(specialty.casefold(), self.reminder_days)


_LISTS = {"reminder_days", "recovery_days", "specialties", "performers", "schedule_actors",
          "states"}


def from_section(raw: Any, root: Path | None = None) -> SchedulingConfig:
    """`settings.section("scheduling")` -> SchedulingConfig; SchedulingConfigError says the fix."""
    if not raw:
        return SchedulingConfig()
    if not isinstance(raw, dict):
        raise SchedulingConfigError("[scheduling] must be a table")
    base = root or Path.cwd()
    table = dict(raw)
    destinations = table.pop("destinations", [])
    preparations = table.pop("preparation", {})
    by_specialty = table.pop("reminders_by_specialty", {})
    config = _typed(SchedulingConfig(), table, "[scheduling]",
                    skip={"destinations", "preparations", "reminders_by_specialty"})
    if not isinstance(by_specialty, dict):
        raise SchedulingConfigError("[scheduling.reminders_by_specialty] must be a table of "
                                    "specialty = [days, ...]")
    ladders = {str(k).casefold(): _days(v, f"reminders_by_specialty.{k}")
               for k, v in by_specialty.items()}
    preps = {str(name): _preparation(str(name), value, base)
             for name, value in (preparations or {}).items()}
    if isinstance(destinations, dict):
        destinations = [destinations]
    if not isinstance(destinations, list):
        raise SchedulingConfigError("[[scheduling.destinations]] must be an array of tables")
    chosen = tuple(_destination(d, n, preps) for n, d in enumerate(destinations))
    names = [d.name for d in chosen]
    if len(set(names)) != len(names):
        raise SchedulingConfigError("[[scheduling.destinations]]: names must be unique")
    return replace(config, destinations=chosen, preparations=preps,
                   reminders_by_specialty=ladders)


def _typed(instance: Any, table: dict[str, Any], where: str, skip: set[str]) -> Any:
    known = {f.name: f for f in fields(instance) if f.name not in skip}
    unknown = set(table) - set(known)
    if unknown:
        raise SchedulingConfigError(f"{where}: unknown keys {sorted(unknown)}; known: "
                                    f"{sorted(known)}")
    values: dict[str, Any] = {}
    for key, value in table.items():
        kind = str(known[key].type)
        try:
            if key in _LISTS:
                values[key] = _days(value, key) if key.endswith("_days") else \
                    tuple(str(v) for v in (value if isinstance(value, list) else [value]))
            elif kind == "float":
                values[key] = float(value)
            elif kind == "int":
                values[key] = int(value)
            elif kind == "bool":
                values[key] = value if isinstance(value, bool) else \
                    str(value).lower() in ("1", "true", "yes")
            else:
                values[key] = str(value)
        except (TypeError, ValueError) as exc:
            raise SchedulingConfigError(f"{where}: {key} = {value!r} is not a valid {kind}"
                                        ) from exc
    return replace(instance, **values)


def _days(value: Any, key: str) -> tuple[int, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    if not isinstance(value, list):
        raise SchedulingConfigError(f"[scheduling] {key} must be a list of whole days")
    days = tuple(sorted({int(v) for v in value}, reverse=True))
    if any(d < 0 for d in days):
        raise SchedulingConfigError(f"[scheduling] {key}: days cannot be negative")
    return days


def _destination(raw: Any, index: int, preps: dict[str, Preparation]) -> Destination:
    where = f"[[scheduling.destinations]] entry {index + 1}"
    if not isinstance(raw, dict) or not raw.get("name"):
        raise SchedulingConfigError(f"{where}: name is required")
    found: Destination = _typed(Destination(name=str(raw["name"])), raw, where, skip=set())
    if found.source not in SOURCES:
        raise SchedulingConfigError(f"{where}: source must be one of {', '.join(SOURCES)}")
    if found.source in ("fhir", "ihe") and not found.fhir_base.startswith(("http://",
                                                                          "https://")):
        raise SchedulingConfigError(f"{where}: source {found.source} needs fhir_base = "
                                    "\"https://...\" (the FHIR server holding the calendar)")
    if found.source == "smart-links" and not found.manifest_url:
        raise SchedulingConfigError(f"{where}: source smart-links needs manifest_url (the "
                                    "publisher's $bulk-publish URL)")
    if found.source == "hl7v2" and not found.hl7_partner:
        raise SchedulingConfigError(f"{where}: source hl7v2 needs hl7_partner = "
                                    "\"APP^FACILITY\" (an [hl7.senders] entry with outbound)")
    if not found.specialties and not found.performers:
        raise SchedulingConfigError(f"{where}: give specialties or performers to say which "
                                    "referrals book here")
    try:
        ZoneInfo(found.time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SchedulingConfigError(f"{where}: time_zone {found.time_zone!r} is not an IANA "
                                    "zone such as America/Chicago") from exc
    if found.preparation and found.preparation not in preps:
        raise SchedulingConfigError(f"{where}: preparation {found.preparation!r} has no "
                                    f"[scheduling.preparation.{found.preparation}] table")
    return found


def _preparation(name: str, raw: Any, root: Path) -> Preparation:
    where = f"[scheduling.preparation.{name}]"
    if not isinstance(raw, dict):
        raise SchedulingConfigError(f"{where} must be a table")
    questionnaire = None
    if raw.get("questionnaire"):
        path = Path(str(raw["questionnaire"]))
        path = path if path.is_absolute() else root / path
        try:
            questionnaire = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SchedulingConfigError(f"{where}: questionnaire {path} cannot be read as "
                                        f"FHIR JSON: {exc}") from exc
        if questionnaire.get("resourceType") != "Questionnaire":
            raise SchedulingConfigError(f"{where}: {path} is not a Questionnaire")
    instructions = {key.removeprefix("instructions_"): str(value)
                    for key, value in raw.items() if key.startswith("instructions_")}
    unknown = set(raw) - {"questionnaire", "reminder_days"} - {f"instructions_{k}"
                                                                for k in instructions}
    if unknown:
        raise SchedulingConfigError(f"{where}: unknown keys {sorted(unknown)}; known: "
                                    "questionnaire, instructions_en, instructions_es, "
                                    "reminder_days")
    days = _days(raw.get("reminder_days", []), f"preparation.{name}.reminder_days")
    return Preparation(name, questionnaire, instructions, days)
