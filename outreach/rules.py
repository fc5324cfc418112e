"""The rule engine: before every send, one pure decision over (referral, patient, ask, consent,
history, policy, now): send now, defer to a time, or skip, with the rule that fired.

Rules, in the order they are checked:
1. referral-closed: the referral is finished, booked or its outreach stopped: skip.
2. expired: the ask's `expires_at` has passed (or would pass before the deferral): skip.
3. opted-out / no-contact: consent per channel (FCC 24-18: revocation by any reasonable means)
   and a usable contact point (E.164 mobile, valid email, not failing): the first channel of the
   ask that passes is used; none: skip, naming the first reason.
4. daily-limit / weekly-limit: at most `daily_cap` messages per local day and `weekly_cap` per
   7 local days per patient and purpose (FCC 15-72 healthcare exemption: 1 and 3), counted per
   channel unless `caps_across_channels`: defer to the day the cap allows. SMS and voice only;
   email is no call under the TCPA.
5. quiet-hours / evening-window: the send must fall inside the window in every candidate zone of
   the patient (never outside 08:00-21:00 local, 47 CFR 64.1200(c)(1)): defer to the window's
   next opening. SMS and voice only.
Answers to the patient (HELP, the one opt-out confirmation) skip rules 3-5: the patient asked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from outreach.config import Policy
from outreach.contacts import ContactPoint

SEND, DEFER, SKIP = "send", "defer", "skip"
TIMED = ("sms", "voice")  # channels the calling window and the caps govern

#: rule -> Communication.statusReason code (http://terminology.hl7.org/CodeSystem/
#: communication-not-done-reason where it has one, else a Refloop code)
STATUS_REASONS = {"referral-closed": "referral-closed", "expired": "expired",
                  "opted-out": "patient-objection", "no-contact": "invalid-phone-number",
                  "daily-limit": "daily-limit", "weekly-limit": "weekly-limit",
                  "quiet-hours": "quiet-hours", "evening-window": "quiet-hours",
                  "no-common-window": "quiet-hours"}


@dataclass(frozen=True)
class Situation:
    """The referral as the rules see it."""

    open: bool = True
    stopped: str = ""  # why outreach stopped (booked, replied, opted-out, closed) or ""


@dataclass(frozen=True)
class PatientView:
    contacts: tuple[ContactPoint, ...]
    zones: tuple[str, ...]
    zone_source: str = "default"


@dataclass(frozen=True)
class Consent:
    opted_out: frozenset[str] = frozenset()     # channels
    blocked: frozenset[str] = frozenset()       # addresses (a STOP from that number)
    failing: frozenset[str] = frozenset()       # "channel:address" the provider refused


@dataclass(frozen=True)
class Sent:
    purpose: str
    channel: str
    at: datetime


@dataclass(frozen=True)
class Ask:
    purpose: str
    channels: tuple[str, ...]
    window: str = "day"
    expires_at: datetime | None = None
    answer: bool = False  # a reply to the patient (HELP, opt-out confirmation)


@dataclass(frozen=True)
class Decision:
    outcome: str
    rule: str
    reason: str
    channel: str = ""
    address: str = ""
    not_before: datetime | None = None
    zones: tuple[str, ...] = ()
    skipped: tuple[str, ...] = field(default_factory=tuple)  # channels passed over, with why

    @property
    def status_reason(self) -> str:
        return STATUS_REASONS.get(self.rule, self.rule)


def decide(situation: Situation, patient: PatientView, ask: Ask, consent: Consent,
           history: Sequence[Sent], policy: Policy, now: datetime) -> Decision:
    zones = patient.zones
    if not situation.open or situation.stopped:
        why = situation.stopped or "the referral is finished"
        return Decision(SKIP, "referral-closed", f"outreach stopped: {why}", zones=zones)
    if ask.expires_at is not None and now >= ask.expires_at:
        return Decision(SKIP, "expired", f"the message expired at {ask.expires_at:%Y-%m-%d %H:%M}"
                        " UTC", zones=zones)
    chosen, passed = _channel(patient, ask, consent)
    if chosen is None:
        first = passed[0] if passed else "no channel was asked for"
        rule = "opted-out" if any("opted out" in p for p in passed) else "no-contact"
        return Decision(SKIP, rule, first, zones=zones, skipped=tuple(passed))
    base: dict[str, Any] = {"channel": chosen.channel, "address": chosen.address,
                            "zones": zones, "skipped": tuple(passed)}
    if ask.answer or chosen.channel not in TIMED:
        return Decision(SEND, "allowed", _allowed(chosen.channel, passed), **base)
    at, rule, why = now, "allowed", ""
    capped = _cap(ask.purpose, chosen.channel, history, policy, zones[0], now)
    if capped is not None:
        at, rule, why = capped
    window = (policy.evening_start, policy.evening_end) if ask.window == "evening" \
        else (policy.quiet_start, policy.quiet_end)
    opens = next_window(at, zones, *window)
    if opens is None:
        return Decision(SKIP, "no-common-window", "the patient's possible time zones "
                        f"({', '.join(zones)}) share no sending hours", **base)
    if opens > at and rule == "allowed":
        rule = "evening-window" if ask.window == "evening" else "quiet-hours"
        local = at.astimezone(ZoneInfo(zones[0]))
        why = (f"{local:%H:%M} {_short(local)} is outside {window[0]:%H:%M}-{window[1]:%H:%M} "
               f"in the patient's time zone ({', '.join(zones)})")
    at = opens
    if ask.expires_at is not None and at >= ask.expires_at:
        return Decision(SKIP, "expired", f"{why}; the next chance is after the message "
                        "expires", **base)
    if at <= now:
        return Decision(SEND, "allowed", _allowed(chosen.channel, passed), **base)
    return Decision(DEFER, rule, f"{why}: deferred to {at:%Y-%m-%d %H:%M} UTC",
                    not_before=at, **base)


def _channel(patient: PatientView, ask: Ask, consent: Consent
             ) -> tuple[ContactPoint | None, list[str]]:
    passed: list[str] = []
    for channel in ask.channels:
        if channel in consent.opted_out and not ask.answer:
            passed.append(f"{channel}: the patient opted out")
            continue
        points = [p for p in patient.contacts if p.channel == channel]
        usable = [p for p in points if p.usable
                  and f"{p.channel}:{p.address}" not in consent.failing
                  and (ask.answer or p.address not in consent.blocked)]
        if usable:
            return usable[0], passed
        if any(p.address in consent.blocked for p in points):
            passed.append(f"{channel}: the patient opted out from that address")
        elif points:
            problems = [p.problem or "the provider refused it before" for p in points]
            passed.append(f"{channel}: no usable contact point ({problems[0]})")
        else:
            passed.append(f"{channel}: no contact point in Patient.telecom")
    return None, passed


def _allowed(channel: str, passed: list[str]) -> str:
    return f"{channel} allowed" + (f" ({'; '.join(passed)})" if passed else "")


def _cap(purpose: str, channel: str, history: Sequence[Sent], policy: Policy, zone: str,
         now: datetime) -> tuple[datetime, str, str] | None:
    """When the caps allow the next message, if not now: (time, rule, why)."""
    tz = ZoneInfo(zone)
    days = sorted(s.at.astimezone(tz).date() for s in history
                  if s.purpose == purpose and s.channel in TIMED
                  and (policy.caps_across_channels or s.channel == channel))
    today = now.astimezone(tz).date()
    today_count = sum(1 for d in days if d == today)
    if today_count >= policy.daily_cap:
        return (_day_start(today + timedelta(days=1), tz), "daily-limit",
                f"{today_count} {purpose} message(s) today already (limit {policy.daily_cap} "
                "a day)")
    week = [d for d in days if today - timedelta(days=6) <= d <= today]
    if len(week) >= policy.weekly_cap:
        frees = week[len(week) - policy.weekly_cap] + timedelta(days=7)
        return (_day_start(frees, tz), "weekly-limit",
                f"{len(week)} {purpose} messages in the last 7 days (limit "
                f"{policy.weekly_cap} a week)")
    return None


def next_window(at: datetime, zones: Iterable[str], start: time, end: time
                ) -> datetime | None:
    """The first instant at or after `at` inside [start, end) local in every zone."""
    tzs = [ZoneInfo(z) for z in zones]
    candidate = at
    for _ in range(16):
        moved = False
        for tz in tzs:
            opening = _opening(candidate, tz, start, end)
            if opening > candidate:
                candidate, moved = opening, True
        if not moved:
            return candidate
    return None


def in_window(at: datetime, zone: str, start: time, end: time) -> bool:
    local = at.astimezone(ZoneInfo(zone))
    return start <= local.time() < end


def _opening(at: datetime, tz: ZoneInfo, start: time, end: time) -> datetime:
    local = at.astimezone(tz)
    if start <= local.time() < end:
        return at
    day = local.date() if local.time() < start else local.date() + timedelta(days=1)
    return datetime.combine(day, start, tz).astimezone(at.tzinfo)


def _day_start(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0, 0), tz).astimezone(UTC)


def _short(local: datetime) -> str:
    return local.tzname() or ""


def consent_state(events: Iterable[tuple[datetime, str, str]]) -> frozenset[str]:
    """Channels opted out after applying (at, channel, 'opt-out' | 'opt-in') events in time
    order ('all' as the channel applies to every channel)."""
    out: set[str] = set()
    for _at, channel, kind in sorted(events, key=lambda e: e[0]):
        targets = {"sms", "voice", "email"} if channel == "all" else {channel}
        if kind == "opt-out":
            out |= targets
        elif kind == "opt-in":
            out -= targets
    return frozenset(out)
