"""Escalation ladders: which channel, at which offset from the referral becoming contactable,
with which template, and when to stop. Declared in configuration per priority and optionally per
specialty or payer; each ladder has a version, and a referral keeps the rungs of the version it
started on.

Defaults a practice can run on day one:
- stat/asap/urgent: SMS at once, voice after 2 h, SMS the next morning, a coordinator call task
  after 24 h;
- routine: SMS and email at once, SMS after 2 days (early evening), voice after 4 days, a
  coordinator call task after 7 days, and `failed` with reason `unreachable` after 21 days.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from referrals.model import PRIORITIES

MESSAGE_CHANNELS = ("sms", "email", "voice")
CHANNELS = (*MESSAGE_CHANNELS, "task", "fail")
STOP_ON = ("booked", "replied", "opted-out", "closed")


class LadderError(ValueError):
    """A ladder in the configuration is wrong; the message names it and the key."""


@dataclass(frozen=True)
class Rung:
    channel: str                 # sms | email | voice | task | fail
    after: timedelta
    template: str = "first-contact"
    at_local: time | None = None  # run at this local time on the day the offset lands in
    window: str = "day"           # day | evening (the early evening window)

    def to_json(self) -> dict[str, Any]:
        return {"channel": self.channel, "after": format_duration(self.after),
                "template": self.template, "window": self.window,
                "at_local": self.at_local.strftime("%H:%M") if self.at_local else None}

    @staticmethod
    def from_json(data: dict[str, Any], where: str = "rung") -> Rung:
        channel = str(data.get("channel", ""))
        if channel not in CHANNELS:
            raise LadderError(f"{where}: channel {channel!r}; use one of {', '.join(CHANNELS)}")
        window = str(data.get("window") or "day")
        if window not in ("day", "evening"):
            raise LadderError(f"{where}: window {window!r}; use day or evening")
        at_local = data.get("at_local")
        return Rung(channel, parse_duration(str(data.get("after", "0")), where),
                    str(data.get("template") or "first-contact"),
                    _clock(str(at_local), where) if at_local else None, window)

    def due(self, start: datetime, zone: str) -> datetime:
        """When this rung runs for a plan started at `start` in the patient's `zone`."""
        moment = start + self.after
        if self.at_local is None:
            return moment
        local = moment.astimezone(ZoneInfo(zone))
        wanted = datetime.combine(local.date(), self.at_local, ZoneInfo(zone))
        return wanted if wanted >= start else moment


@dataclass(frozen=True)
class Ladder:
    name: str
    version: int
    rungs: tuple[Rung, ...]
    priorities: tuple[str, ...] = PRIORITIES
    specialties: tuple[str, ...] = ()
    payers: tuple[str, ...] = ()
    stop_on: tuple[str, ...] = STOP_ON

    def matches(self, priority: str, specialty: str, payer: str) -> bool:
        return (priority in self.priorities
                and (not self.specialties or specialty.lower() in self.specialties)
                and (not self.payers or payer.lower() in self.payers))

    @property
    def specificity(self) -> int:
        return bool(self.specialties) + bool(self.payers)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version,
                "rungs": [r.to_json() for r in self.rungs], "stop_on": list(self.stop_on)}


DEFAULT_LADDERS = (
    Ladder("urgent", 1, (
        Rung("sms", timedelta(0)),
        Rung("voice", timedelta(hours=2)),
        Rung("sms", timedelta(days=1), at_local=time(9, 0)),
        Rung("task", timedelta(hours=24)),
    ), priorities=("stat", "asap", "urgent")),
    Ladder("routine", 1, (
        Rung("sms", timedelta(0)),
        Rung("email", timedelta(0)),
        Rung("sms", timedelta(days=2), window="evening"),
        Rung("voice", timedelta(days=4)),
        Rung("task", timedelta(days=7)),
        Rung("fail", timedelta(days=21)),
    ), priorities=("routine",)),
)


def choose(ladders: tuple[Ladder, ...], priority: str, specialty: str, payer: str) -> Ladder:
    """The most specific matching ladder (specialty and payer beat priority alone)."""
    found = [ladder for ladder in ladders if ladder.matches(priority, specialty, payer)]
    if not found:
        raise LadderError(f"no ladder for priority {priority!r}; add one to [[outreach.ladders]]")
    return max(found, key=lambda ladder: ladder.specificity)


def from_config(entries: list[dict[str, Any]]) -> tuple[Ladder, ...]:
    if not entries:
        return DEFAULT_LADDERS
    ladders = []
    for n, entry in enumerate(entries):
        where = f"[[outreach.ladders]] #{n + 1} ({entry.get('name', 'unnamed')})"
        rungs = tuple(Rung.from_json(r, f"{where} rung {i + 1}")
                      for i, r in enumerate(entry.get("rungs") or []))
        if not rungs:
            raise LadderError(f"{where}: no rungs")
        priorities = tuple(entry.get("priorities") or PRIORITIES)
        unknown = set(priorities) - set(PRIORITIES)
        if unknown:
            raise LadderError(f"{where}: unknown priorities {sorted(unknown)}")
        stop_on = tuple(entry.get("stop_on") or STOP_ON)
        if set(stop_on) - set(STOP_ON):
            raise LadderError(f"{where}: stop_on may hold {', '.join(STOP_ON)}")
        ladders.append(Ladder(str(entry.get("name") or f"ladder-{n + 1}"),
                              int(entry.get("version", 1)), rungs, priorities,
                              tuple(s.lower() for s in entry.get("specialties") or ()),
                              tuple(p.lower() for p in entry.get("payers") or ()), stop_on))
    return tuple(ladders)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 60, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, where: str = "duration") -> timedelta:
    """'0', '30m', '2h', '2d', '1w' (a bare number is minutes)."""
    found = _DURATION.match(text)
    if not found:
        raise LadderError(f"{where}: {text!r} is not a duration like 30m, 2h, 2d")
    return timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _clock(text: str, where: str) -> time:
    try:
        return time.fromisoformat(text)
    except ValueError as exc:
        raise LadderError(f"{where}: {text!r} is not a time like 09:00") from exc
