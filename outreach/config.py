"""The `[outreach]` settings (TOML table, or REFLOOP_OUTREACH__<KEY> variables) as a typed object.

Quiet hours are configurable but never outside 08:00-21:00 local (47 CFR 64.1200(c)(1)); the
message caps default to the healthcare exemption's 1 a day and 3 a week per purpose (FCC 15-72
para. 147) and can only be set lower.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from outreach.ladders import DEFAULT_LADDERS, Ladder, LadderError, from_config
from referrals.errors import RefloopError

EARLIEST, LATEST = time(8, 0), time(21, 0)
START_ON = {"detected": ("detected",), "accepted": ("accepted",),
            "authorized": ("outreach",)}


class OutreachConfigError(RefloopError):
    """A wrong [outreach] setting; the message names the key and what to use."""


@dataclass(frozen=True)
class TwilioSender:
    """Who a text or call comes from: one tenant's Messaging Service or From number (and calling
    number), for the referrals whose source key starts with one of `sources` (the tenant's
    referral sources, as under [[access.tenants]]); `tenant` "" is the deployment's default."""

    tenant: str = ""
    sources: tuple[str, ...] = ()
    messaging_service_sid: str = ""
    from_number: str = ""
    voice_from: str = ""

    def covers(self, source_key: str) -> bool:
        return any(source_key.startswith(source + "|") for source in self.sources)

    @property
    def sms(self) -> dict[str, str]:
        """The sender arguments of messages.create."""
        if self.messaging_service_sid:
            return {"messaging_service_sid": self.messaging_service_sid}
        return {"from_": self.from_number}

    @property
    def caller(self) -> str:
        return self.voice_from or self.from_number


@dataclass(frozen=True)
class TwilioConfig:
    account_sid: str = ""
    auth_token: str = ""
    messaging_service_sid: str = ""
    from_number: str = ""
    voice_from: str = ""
    #: the REST API's address; only a test or demo sandbox changes it
    api_base_url: str = ""
    timeout_seconds: float = 10.0
    #: per-tenant senders ([[outreach.twilio.senders]]); the ones above are the default
    senders: tuple[TwilioSender, ...] = ()

    @property
    def default_sender(self) -> TwilioSender:
        return TwilioSender("", (), self.messaging_service_sid, self.from_number,
                            self.voice_from)

    def sender_for(self, source_key: str) -> TwilioSender | None:
        """The sender of the referral's tenant, else the default; None when neither exists."""
        found = next((s for s in self.senders if s.covers(source_key)), None)
        if found is not None:
            return found
        default = self.default_sender
        return default if default.messaging_service_sid or default.from_number else None

    @property
    def configured(self) -> bool:
        return bool(self.account_sid and self.auth_token and
                    (self.messaging_service_sid or self.from_number or self.senders))

    @property
    def calls(self) -> bool:
        """Whether any sender has a number to call from."""
        return any(s.caller for s in (self.default_sender, *self.senders))


@dataclass(frozen=True)
class SmtpConfig:
    host: str = ""
    port: int = 587
    security: str = "starttls"  # starttls | tls | none (none only to 127.0.0.1)
    username: str = ""
    password: str = ""
    from_address: str = ""
    timeout_seconds: float = 10.0

    @property
    def configured(self) -> bool:
        return bool(self.host and self.from_address)


@dataclass(frozen=True)
class Policy:
    """What the rule engine needs from the configuration (plain values, for the pure rules)."""

    quiet_start: time = EARLIEST
    quiet_end: time = LATEST
    evening_start: time = time(17, 0)
    evening_end: time = time(20, 0)
    daily_cap: int = 1
    weekly_cap: int = 3
    caps_across_channels: bool = False


@dataclass(frozen=True)
class OutreachConfig:
    enabled: bool = False
    practice_name: str = "Our clinic"
    practice_phone: str = ""
    coordinator_line: str = ""
    default_time_zone: str = "America/New_York"
    default_region: str = "US"
    start_on: str = "accepted"
    sms_segment_limit: int = 2
    confirm_opt_out: bool = True
    public_base_url: str = ""
    secret_file: Path | None = None
    policy: Policy = field(default_factory=Policy)
    ladders: tuple[Ladder, ...] = DEFAULT_LADDERS
    twilio: TwilioConfig = field(default_factory=TwilioConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)

    @property
    def start_stages(self) -> tuple[str, ...]:
        return START_ON[self.start_on]


def from_settings(section: dict[str, Any], var_dir: Path, base_url: str) -> OutreachConfig:
    twilio = _twilio(dict(section.get("twilio") or {}))
    smtp = SmtpConfig(**_typed(section.get("smtp") or {}, SmtpConfig, "outreach.smtp"))
    plain = {k: v for k, v in section.items() if k not in ("twilio", "smtp", "ladders")}
    known = {"enabled", "practice_name", "practice_phone", "coordinator_line",
             "default_time_zone", "default_region", "start_on", "sms_segment_limit",
             "confirm_opt_out", "public_base_url", "secret_file", "quiet_hours",
             "evening_window", "daily_cap", "weekly_cap", "caps_across_channels"}
    unknown = set(plain) - known
    if unknown:
        raise OutreachConfigError(f"[outreach]: unknown keys {sorted(unknown)}; known: "
                                  f"{', '.join(sorted(known))}, twilio, smtp, ladders")
    policy = _policy(plain)
    try:
        ladders = from_config(list(section.get("ladders") or []))
    except LadderError as exc:
        raise OutreachConfigError(str(exc)) from exc
    start_on = str(plain.get("start_on", "accepted"))
    if start_on not in START_ON:
        raise OutreachConfigError(f"[outreach] start_on {start_on!r}; use one of "
                                  f"{', '.join(START_ON)}")
    zone = str(plain.get("default_time_zone", "America/New_York"))
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise OutreachConfigError(f"[outreach] default_time_zone {zone!r} is not an IANA "
                                  "zone such as America/Chicago") from exc
    if smtp.security not in ("starttls", "tls", "none"):
        raise OutreachConfigError("[outreach.smtp] security: use starttls, tls or none")
    enabled = _bool(plain.get("enabled", twilio.configured or smtp.configured), "enabled")
    return OutreachConfig(
        enabled=enabled, practice_name=str(plain.get("practice_name", "Our clinic")),
        practice_phone=str(plain.get("practice_phone", "")),
        coordinator_line=str(plain.get("coordinator_line", plain.get("practice_phone", ""))),
        default_time_zone=zone, default_region=str(plain.get("default_region", "US")),
        start_on=start_on, sms_segment_limit=int(plain.get("sms_segment_limit", 2)),
        confirm_opt_out=_bool(plain.get("confirm_opt_out", True), "confirm_opt_out"),
        public_base_url=str(plain.get("public_base_url") or base_url).rstrip("/"),
        secret_file=Path(plain.get("secret_file") or var_dir / "outreach-secret.key"),
        policy=policy, ladders=ladders, twilio=twilio, smtp=smtp)


def _twilio(raw: dict[str, Any]) -> TwilioConfig:
    senders = raw.pop("senders", None) or []
    if not isinstance(senders, list):
        raise OutreachConfigError("[outreach.twilio] senders: write each tenant's sender as a "
                                  "[[outreach.twilio.senders]] table")
    typed = _typed(raw, TwilioConfig, "outreach.twilio")
    typed.pop("senders", None)
    return TwilioConfig(**typed, senders=tuple(_sender(i, s) for i, s in enumerate(senders)))


def _sender(index: int, raw: Any) -> TwilioSender:
    where = f"[[outreach.twilio.senders]] #{index + 1}"
    if not isinstance(raw, dict) or not raw.get("tenant"):
        raise OutreachConfigError(f"{where}: 'tenant' is required (the tenant's name, as under "
                                  "[[access.tenants]])")
    sources = raw.get("sources", [])
    sources = [sources] if isinstance(sources, str) else list(sources)
    fields = {k: v for k, v in raw.items() if k not in ("tenant", "sources")}
    typed = _typed(fields, TwilioSender, "outreach.twilio.senders")
    typed = {k: v for k, v in typed.items() if k not in ("tenant", "sources")}
    sender = TwilioSender(tenant=str(raw["tenant"]),
                          sources=tuple(str(s).rstrip("|") for s in sources if s), **typed)
    if not (sender.messaging_service_sid or sender.from_number):
        raise OutreachConfigError(f"{where} ({sender.tenant}): set messaging_service_sid "
                                  "(MG...) or from_number (+1...)")
    return sender


def with_tenant_sources(config: OutreachConfig,
                        tenants: dict[str, tuple[str, ...]]) -> OutreachConfig:
    """Fill in the sources of each sender that lists none from the tenant of the same name;
    a sender that still has none names a tenant nobody defined."""
    senders = []
    for sender in config.twilio.senders:
        if not sender.sources:
            if sender.tenant not in tenants:
                raise OutreachConfigError(
                    f"[[outreach.twilio.senders]] tenant {sender.tenant!r}: no sources, and no "
                    "[[access.tenants]] of that name; list its referral sources (sources = "
                    "[\"fhir|https://ehr.example.org/fhir\"]) or define the tenant")
            sender = replace(sender, sources=tenants[sender.tenant])
        senders.append(sender)
    names = [s.tenant for s in senders]
    if len(set(names)) != len(names):
        raise OutreachConfigError(f"[[outreach.twilio.senders]]: one sender per tenant, got "
                                  f"{names}")
    return replace(config, twilio=replace(config.twilio, senders=tuple(senders)))


def _policy(plain: dict[str, Any]) -> Policy:
    start, end = _window(str(plain.get("quiet_hours", "08:00-21:00")), "quiet_hours")
    if start < EARLIEST or end > LATEST:
        raise OutreachConfigError(
            f"[outreach] quiet_hours {plain['quiet_hours']!r}: sending hours may not start "
            "before 08:00 or end after 21:00 local time (47 CFR 64.1200(c)(1))")
    evening = _window(str(plain.get("evening_window", "17:00-20:00")), "evening_window")
    daily, weekly = int(plain.get("daily_cap", 1)), int(plain.get("weekly_cap", 3))
    if not (0 < daily <= 1 and 0 < weekly <= 3):
        raise OutreachConfigError("[outreach] daily_cap may be 1 and weekly_cap 1 to 3: the "
                                  "healthcare exemption allows no more (FCC 15-72)")
    return Policy(start, end, max(evening[0], start), min(evening[1], end), daily, weekly,
                  _bool(plain.get("caps_across_channels", False), "caps_across_channels"))


def _window(text: str, key: str) -> tuple[time, time]:
    try:
        first, last = (time.fromisoformat(part.strip()) for part in text.split("-"))
    except ValueError as exc:
        raise OutreachConfigError(f"[outreach] {key} {text!r}: write it as 08:00-21:00") from exc
    if first >= last:
        raise OutreachConfigError(f"[outreach] {key} {text!r}: the start must be before the end")
    return first, last


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise OutreachConfigError(f"[outreach] {key}: {value!r} is not true or false")


def _typed(values: dict[str, Any], kind: type, table: str) -> dict[str, Any]:
    fields = kind.__dataclass_fields__  # type: ignore[attr-defined]
    unknown = set(values) - set(fields)
    if unknown:
        raise OutreachConfigError(f"[{table}]: unknown keys {sorted(unknown)}; known: "
                                  f"{', '.join(fields)}")
    typed: dict[str, Any] = {}
    for key, value in values.items():
        default = fields[key].default
        try:
            typed[key] = type(default)(value) if not isinstance(default, str) else str(value)
        except (TypeError, ValueError) as exc:
            raise OutreachConfigError(f"[{table}] {key}: {value!r} is not a "
                                      f"{type(default).__name__}") from exc
    return typed
