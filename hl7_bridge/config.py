"""The `[hl7]` table of refloop.toml, typed. Environment: REFLOOP_HL7__PORT=2575 and so on."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from referrals.errors import RefloopError


class Hl7ConfigError(RefloopError):
    """The [hl7] configuration is wrong; the message names the key."""


@dataclass(frozen=True)
class Outbound:
    """Where and what to send back to a v2 sender when its referrals change state."""

    host: str = ""
    port: int = 0
    #: referral stages that trigger a message (accepted, declined, scheduled, no-show...)
    events: tuple[str, ...] = ("accepted", "declined", "scheduled", "no-show",
                               "appointment-cancelled", "visit-completed", "loop-closed",
                               "cancelled")
    timeout_seconds: float = 10.0
    max_attempts: int = 8

    @property
    def enabled(self) -> bool:
        return bool(self.host and self.port)


@dataclass(frozen=True)
class SenderConfig:
    """Per-sender settings, keyed by `MSH-3^MSH-4` (e.g. "GPSYS^GPCLINIC")."""

    #: assigning authority (namespace id or OID) -> FHIR identifier system URI
    authorities: dict[str, str] = field(default_factory=dict)
    time_zone: str = "UTC"
    fallback_charset: str = "utf-8"
    default_version: str = "2.5.1"
    #: order codes (OBR-4.1) that make an OMG/ORM a referral; ["*"] = every order
    referral_order_codes: tuple[str, ...] = ("57133-1",)
    #: TLS client certificate subject CN this sender must present (when TLS is on)
    certificate_cn: str = ""
    outbound: Outbound = field(default_factory=Outbound)


@dataclass(frozen=True)
class Hl7Config:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 2575
    max_message_bytes: int = 16 * 1024 * 1024
    idle_timeout_seconds: float = 600.0
    read_timeout_seconds: float = 30.0
    tls_cert: str = ""
    tls_key: str = ""
    #: CA bundle that client certificates must chain to; setting it requires client certs
    tls_client_ca: str = ""
    #: only these senders may send; empty = any sender (the local-testing default)
    allow: tuple[str, ...] = ()
    accept_unknown_senders: bool = True
    processing_ids: tuple[str, ...] = ("P",)
    #: our MSH-3/MSH-4 in ACKs and outbound messages
    application: str = "REFLOOP"
    facility: str = "REFLOOP"
    group_commit_max: int = 64
    #: a parked message whose referral has not arrived after this long goes to quarantine
    parked_expiry_hours: float = 72.0
    #: stored messages a worker maps in one write transaction (apply.py)
    mapping_batch: int = 200
    #: parse and map batches in a second process beside the writer (mapper.py)
    mapping_process: bool = True
    #: listener processes sharing the port; 0 = one per CPU core
    processes: int = 0
    #: connections a listener process takes before the next one gets any (then: fewest first)
    connections_per_process: int = 4
    #: open connections, in total and per source address (0 = no cap)
    max_connections: int = 1000
    max_connections_per_source: int = 100
    senders: dict[str, SenderConfig] = field(default_factory=dict)
    default_sender: SenderConfig = field(default_factory=SenderConfig)

    @property
    def process_count(self) -> int:
        """How many listener processes to run (`processes`, 0 meaning one per core)."""
        return self.processes if self.processes > 0 else max(1, os.cpu_count() or 1)

    def sender(self, name: str) -> SenderConfig:
        return self.senders.get(name, self.default_sender)

    def sender_allowed(self, name: str) -> bool:
        if self.allow:
            return name in self.allow
        return self.accept_unknown_senders or name in self.senders


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(str(v) for v in value)


def _positive(value: Any, key: str) -> float:
    number = float(value)
    if number <= 0:
        raise Hl7ConfigError(f"[hl7] {key} must be more than 0, not {value!r}")
    return number


def _outbound(raw: dict[str, Any]) -> Outbound:
    base = Outbound()
    return Outbound(
        host=str(raw.get("host", "")), port=int(raw.get("port", 0)),
        events=_tuple(raw["events"]) if "events" in raw else base.events,
        timeout_seconds=float(raw.get("timeout_seconds", base.timeout_seconds)),
        max_attempts=int(raw.get("max_attempts", base.max_attempts)),
    )


def _sender(raw: dict[str, Any], base: SenderConfig) -> SenderConfig:
    return SenderConfig(
        authorities={**base.authorities, **{str(k): str(v) for k, v in
                                            (raw.get("authorities") or {}).items()}},
        time_zone=str(raw.get("time_zone", base.time_zone)),
        fallback_charset=str(raw.get("fallback_charset", base.fallback_charset)),
        default_version=str(raw.get("default_version", base.default_version)),
        referral_order_codes=_tuple(raw["referral_order_codes"])
        if "referral_order_codes" in raw else base.referral_order_codes,
        certificate_cn=str(raw.get("certificate_cn", "")),
        outbound=_outbound(raw["outbound"]) if "outbound" in raw else base.outbound,
    )


def load_config(section: dict[str, Any]) -> Hl7Config:
    """Build the typed config from `settings.section("hl7")`; unknown keys are an error."""
    known = set(Hl7Config.__dataclass_fields__) - {"senders", "default_sender"} | {
        "senders", "defaults"}
    unknown = set(section) - known
    if unknown:
        raise Hl7ConfigError(f"[hl7]: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    base = Hl7Config()
    default_sender = _sender(section.get("defaults") or {}, SenderConfig())
    try:
        return Hl7Config(
            # the listener runs only when configured: an [hl7] table (or REFLOOP_HL7__*)
            enabled=_bool(section.get("enabled", bool(section))),
            host=str(section.get("host", base.host)),
            port=int(section.get("port", base.port)),
            max_message_bytes=int(section.get("max_message_bytes", base.max_message_bytes)),
            idle_timeout_seconds=float(section.get("idle_timeout_seconds",
                                                   base.idle_timeout_seconds)),
            read_timeout_seconds=float(section.get("read_timeout_seconds",
                                                   base.read_timeout_seconds)),
            tls_cert=str(section.get("tls_cert", "")), tls_key=str(section.get("tls_key", "")),
            tls_client_ca=str(section.get("tls_client_ca", "")),
            allow=_tuple(section.get("allow", ())),
            accept_unknown_senders=_bool(section.get("accept_unknown_senders",
                                                     base.accept_unknown_senders)),
            processing_ids=_tuple(section.get("processing_ids", base.processing_ids)),
            application=str(section.get("application", base.application)),
            facility=str(section.get("facility", base.facility)),
            group_commit_max=int(section.get("group_commit_max", base.group_commit_max)),
            parked_expiry_hours=_positive(section.get("parked_expiry_hours",
                                                      base.parked_expiry_hours),
                                          "parked_expiry_hours"),
            mapping_batch=int(_positive(section.get("mapping_batch", base.mapping_batch),
                                        "mapping_batch")),
            mapping_process=_bool(section.get("mapping_process", base.mapping_process)),
            processes=int(section.get("processes", base.processes)),
            connections_per_process=int(section.get("connections_per_process",
                                                    base.connections_per_process)),
            max_connections=int(section.get("max_connections", base.max_connections)),
            max_connections_per_source=int(section.get("max_connections_per_source",
                                                       base.max_connections_per_source)),
            senders={str(k): _sender(v, default_sender)
                     for k, v in (section.get("senders") or {}).items()},
            default_sender=default_sender,
        )
    except (TypeError, ValueError) as exc:
        raise Hl7ConfigError(f"[hl7]: {exc}; check the types of the values") from exc
