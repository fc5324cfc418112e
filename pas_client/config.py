"""Typed PAS configuration: `[pas]` (our organisation, coding defaults) and `[[payers]]`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from referrals.errors import RefloopError

VERSIONS = ("2.0.1", "2.2.1")
AUTH_KINDS = ("none", "backend-services", "mtls")
FILTERS = ("org-identifier", "orgIdentifier", "identifier")


class ConfigError(RefloopError):
    """The PAS configuration is wrong; the message names the key and what to do."""


@dataclass(frozen=True)
class PayerAuth:
    kind: str = "none"  # none | backend-services | mtls
    client_id: str = ""
    key_file: str = ""    # backend services: private key (PEM) signing the client assertion
    key_id: str = ""
    key_alg: str = ""     # RS384 | ES384; empty: from the key's type
    token_url: str = ""
    scope: str = "system/Claim.write system/ClaimResponse.read system/Subscription.write"
    cert_file: str = ""   # mutual TLS: client certificate (PEM)
    cert_key_file: str = ""


REQUIREMENTS = ("required", "not-required", "unknown")


@dataclass(frozen=True)
class CoverageRule:
    """One row of a payer's coverage-requirements table: when every criterion given matches
    (an empty one matches anything), prior authorization is `authorization`."""

    authorization: str                  # required | not-required | unknown
    services: tuple[str, ...] = ()      # order codes (any system) or billing codes (CPT...)
    specialties: tuple[str, ...] = ()   # the referral's specialty
    places_of_service: tuple[str, ...] = ()
    plans: tuple[str, ...] = ()         # Coverage.class plan (value or name), or the plan the
    #                                     payer's eligibility answer names


@dataclass(frozen=True)
class PayerConfig:
    name: str
    base_url: str
    version: str = "2.2.1"
    payer_id: str = ""   # the payer's id (PI) agreed with the trading partner
    organization_identifier: str = ""  # ours: NPI/TIN or ISA06 sender id for the filter
    subscription_filter: str = "org-identifier"
    auth: PayerAuth = field(default_factory=PayerAuth)
    timeout_seconds: float = 30.0   # connecting, and the whole reply (not each read)
    max_reply_bytes: int = 16 * 1024 * 1024   # a longer reply is not read (nor stored)
    subscribe: bool = True
    ca_file: str = ""    # CA bundle (PEM) verifying the payer's TLS certificate; empty: system
    # following undecided requests: CMS-0057-F decision clocks, the $inquire backoff
    decision_hours_expedited: float = 72.0
    decision_hours_standard: float = 168.0
    inquire_first_seconds: float = 3600.0   # first $inquire after a pend
    inquire_max_seconds: float = 43200.0    # the backoff doubles up to this
    inquire_after_error_seconds: float = 300.0  # first $inquire after a reply we cannot read
    # which referrals need authorization, and eligibility first
    coverage_rules: tuple[CoverageRule, ...] = ()
    default_authorization: str = "unknown"   # when no rule matches and the payer did not say
    eligibility: bool = False     # CoverageEligibilityRequest/$submit when a referral arrives
    crd_url: str = ""             # the payer's CDS Hooks base (Da Vinci CRD), e.g. .../cds-services
    crd_hook: str = "order-sign"
    auto_submit: bool = False     # submit PAS by itself when authorization is required

    def decision_window(self, expedited: bool) -> timedelta:
        return timedelta(hours=self.decision_hours_expedited if expedited
                         else self.decision_hours_standard)

    def inquire_delay(self, checks: int) -> timedelta:
        """The wait before $inquire number `checks + 1`: doubling from the first, capped."""
        seconds = min(self.inquire_max_seconds, self.inquire_first_seconds * 2 ** checks)
        return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Organization:
    name: str = ""
    npi: str = ""
    tin: str = ""


@dataclass(frozen=True)
class PasConfig:
    organization: Organization = field(default_factory=Organization)
    payers: tuple[PayerConfig, ...] = ()
    place_of_service: str = "11"
    service_category: str = "3"   # X12 1365: Consultation
    request_type: str = "SC"      # X12 1525: Specialty Care Review (a referral)
    claim_type: str = "professional"
    service_codes: dict[str, str] = field(default_factory=dict)  # EHR code -> CPT/HCPCS

    def payer(self, name: str) -> PayerConfig:
        for payer in self.payers:
            if payer.name == name:
                return payer
        known = ", ".join(p.name for p in self.payers) or "none"
        raise ConfigError(f"no [[payers]] entry named {name!r} (configured: {known}); add one "
                          "with name, base_url and version")

    def try_payer(self, name: str) -> PayerConfig | None:
        return next((p for p in self.payers if p.name == name), None)


def from_settings(pas: dict[str, Any], payers: list[dict[str, Any]] | Any) -> PasConfig:
    """Build the typed config from the `[pas]` table and the `[[payers]]` array of tables."""
    organization = Organization(name=str(pas.get("organization_name", "")),
                                npi=str(pas.get("organization_npi", "")),
                                tin=str(pas.get("organization_tin", "")))
    tables = payers if isinstance(payers, list) else []
    return PasConfig(
        organization=organization,
        payers=tuple(payer_from_table(t, organization) for t in tables),
        place_of_service=str(pas.get("place_of_service", "11")),
        service_category=str(pas.get("service_category", "3")),
        request_type=str(pas.get("request_type", "SC")),
        claim_type=str(pas.get("claim_type", "professional")),
        service_codes={str(k): str(v) for k, v in dict(pas.get("service_codes", {})).items()},
    )


def payer_from_table(table: dict[str, Any], organization: Organization) -> PayerConfig:
    name = str(table.get("name", ""))
    if not name or not table.get("base_url"):
        raise ConfigError("each [[payers]] entry needs name and base_url")
    version = str(table.get("version", "2.2.1"))
    if version not in VERSIONS:
        raise ConfigError(f"payer {name}: version {version!r} is not supported; use 2.0.1 or "
                          "2.2.1 (one endpoint per version)")
    kind = str(table.get("auth", "none"))
    if kind not in AUTH_KINDS:
        raise ConfigError(f"payer {name}: auth {kind!r}; use one of {', '.join(AUTH_KINDS)}")
    auth = PayerAuth(kind=kind, client_id=str(table.get("client_id", "")),
                     key_file=str(table.get("key_file", "")),
                     key_id=str(table.get("key_id", "")),
                     key_alg=str(table.get("key_alg", "")),
                     token_url=str(table.get("token_url", "")),
                     scope=str(table.get("scope", PayerAuth.scope)),
                     cert_file=str(table.get("cert_file", "")),
                     cert_key_file=str(table.get("cert_key_file", "")))
    if kind == "backend-services" and not (auth.client_id and auth.key_file and auth.token_url):
        raise ConfigError(f"payer {name}: backend-services needs client_id, key_file, token_url")
    if auth.key_alg not in ("", "RS384", "ES384"):
        raise ConfigError(f"payer {name}: key_alg {auth.key_alg!r}; use RS384 or ES384")
    if kind == "mtls" and not (auth.cert_file and auth.cert_key_file):
        raise ConfigError(f"payer {name}: mtls needs cert_file and cert_key_file")
    flt = str(table.get("subscription_filter", "org-identifier"))
    if flt not in FILTERS:
        raise ConfigError(f"payer {name}: subscription_filter {flt!r}; use one of "
                          f"{', '.join(FILTERS)}")
    return PayerConfig(
        name=name, base_url=str(table["base_url"]).rstrip("/"), version=version,
        payer_id=str(table.get("payer_id", "")),
        organization_identifier=str(table.get("organization_identifier", "")
                                    or organization.npi),
        subscription_filter=flt, auth=auth,
        timeout_seconds=float(table.get("timeout_seconds", 30.0)),
        max_reply_bytes=int(table.get("max_reply_bytes", 16 * 1024 * 1024)),
        subscribe=bool(table.get("subscribe", True)),
        ca_file=str(table.get("ca_file", "")), **_follow_up(name, table),
        **_coverage(name, table))


def _coverage(name: str, table: dict[str, Any]) -> dict[str, Any]:
    default = str(table.get("default_authorization", "unknown"))
    if default not in REQUIREMENTS:
        raise ConfigError(f"payer {name}: default_authorization {default!r}; use one of "
                          f"{', '.join(REQUIREMENTS)}")
    rules = table.get("coverage_rules", [])
    if not isinstance(rules, list):
        raise ConfigError(f"payer {name}: coverage_rules must be an array of tables "
                          "([[payers.coverage_rules]])")
    return {"coverage_rules": tuple(_rule(name, n, r) for n, r in enumerate(rules, start=1)),
            "default_authorization": default,
            "eligibility": bool(table.get("eligibility", False)),
            "crd_url": str(table.get("crd_url", "")).rstrip("/"),
            "crd_hook": str(table.get("crd_hook", "order-sign")),
            "auto_submit": bool(table.get("auto_submit", False))}


def _rule(name: str, number: int, table: Any) -> CoverageRule:
    if not isinstance(table, dict):
        raise ConfigError(f"payer {name}: coverage rule {number} must be a table")
    authorization = str(table.get("authorization", ""))
    if authorization not in REQUIREMENTS:
        raise ConfigError(f"payer {name}: coverage rule {number} needs authorization = "
                          f"{' | '.join(REQUIREMENTS)}")
    known = {"authorization", "services", "specialties", "places_of_service", "plans"}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"payer {name}: coverage rule {number} has unknown keys "
                          f"{sorted(unknown)}; use {', '.join(sorted(known))}")

    def values(key: str) -> tuple[str, ...]:
        found = table.get(key, [])
        return tuple(str(v) for v in ([found] if isinstance(found, str) else found))

    return CoverageRule(authorization, values("services"), values("specialties"),
                        values("places_of_service"), values("plans"))

FOLLOW_UP_KEYS = ("decision_hours_expedited", "decision_hours_standard", "inquire_first_seconds",
                  "inquire_max_seconds", "inquire_after_error_seconds")


def _follow_up(name: str, table: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in FOLLOW_UP_KEYS:
        if key in table:
            try:
                values[key] = float(table[key])
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"payer {name}: {key} must be a number") from exc
            if values[key] <= 0:
                raise ConfigError(f"payer {name}: {key} must be above 0")
    return values
