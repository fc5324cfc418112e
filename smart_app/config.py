"""The `[smart]` table: tenants (EHRs that launch us), sessions, cookie; typed and checked."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from referrals.errors import RefloopError

DEFAULT_SCOPES = ("launch openid fhirUser online_access user/ServiceRequest.rs user/Patient.rs "
                  "user/Coverage.rs user/Practitioner.rs user/PractitionerRole.rs")


class SmartConfigError(RefloopError):
    """The [smart] table is wrong; the message names the key and what to do."""


@dataclass(frozen=True)
class Tenant:
    """One EHR organisation that may launch the app."""

    name: str
    issuers: tuple[str, ...]
    client_id: str
    ehr_origins: tuple[str, ...]
    scopes: str = DEFAULT_SCOPES
    client_secret: str = field(default="", repr=False)
    private_key_file: Path | None = None
    kid: str = ""
    signing_alg: str = "RS384"
    #: the FHIR servers whose ids this EHR's launch context uses (a launch's `patient` is
    #: matched only with referrals from them); its `iss` values unless configured (an `iss`
    #: that is a gateway in front of the FHIR server that sends us referrals names that server)
    fhir_servers: tuple[str, ...] = ()
    #: the [[access.tenants]] entry (an organisation) whose referral sources this EHR's launches
    #: may see; "" when the tenant has no limit
    access_tenant: str = ""
    #: that organisation's referral sources (source-key prefixes), filled in from
    #: [[access.tenants]] by `link_access_tenants`; None: every referral
    sources: tuple[str, ...] | None = None

    def allows(self, iss: str) -> bool:
        return normalise_iss(iss) in {normalise_iss(i) for i in self.issuers}

    @property
    def context_servers(self) -> tuple[str, ...]:
        return self.fhir_servers or self.issuers


@dataclass(frozen=True)
class SmartConfig:
    tenants: tuple[Tenant, ...] = ()
    session_idle_minutes: float = 15.0
    session_absolute_hours: float = 8.0
    cookie_name: str = "refloop_smart"
    token_key_file: Path | None = None
    http_timeout_seconds: float = 10.0
    #: pending launches (unauthenticated: anyone may start one) one address may hold at once,
    #: and all addresses together; each expires after 10 minutes
    launch_states_per_source: int = 20
    launch_states_max: int = 10_000

    def tenant_for_iss(self, iss: str) -> Tenant | None:
        """The tenant whose allow-list holds `iss` (one trailing slash ignored), or None."""
        for tenant in self.tenants:
            if tenant.allows(iss):
                return tenant
        return None

    def tenant(self, name: str) -> Tenant | None:
        return next((t for t in self.tenants if t.name == name), None)

    @property
    def all_ehr_origins(self) -> tuple[str, ...]:
        return tuple(sorted({o for t in self.tenants for o in t.ehr_origins}))


def link_access_tenants(config: SmartConfig, sources_of: Mapping[str, tuple[str, ...]]
                        ) -> SmartConfig:
    """Each tenant's `access_tenant` resolved to that organisation's referral sources
    (`sources_of`: [[access.tenants]] name -> sources), so an organisation is defined once."""
    linked = []
    for tenant in config.tenants:
        if not tenant.access_tenant:
            linked.append(tenant)
            continue
        if tenant.access_tenant not in sources_of:
            known = ", ".join(sorted(sources_of)) or "there is none"
            raise SmartConfigError(
                f"[[smart.tenants]] {tenant.name!r}: access_tenant {tenant.access_tenant!r} is "
                f"not the name of an [[access.tenants]] entry (known: {known}); add that "
                "organisation with its referral sources to [access], or correct the name")
        linked.append(replace(tenant, sources=tuple(sources_of[tenant.access_tenant])))
    return replace(config, tenants=tuple(linked))


def unlimited_tenants_warning(config: SmartConfig) -> str:
    """The warning for a deployment that serves several EHRs while some of them may see every
    referral (no access_tenant); "" when there is nothing to warn about."""
    open_ones = [t.name for t in config.tenants if t.sources is None]
    if len(config.tenants) < 2 or not open_ones:
        return ""
    return (f"[smart] has {len(config.tenants)} tenants and {', '.join(open_ones)} "
            f"{'has' if len(open_ones) == 1 else 'have'} no access_tenant: launches from "
            f"{'it' if len(open_ones) == 1 else 'them'} see every organisation's referrals. "
            "Set access_tenant = \"<[[access.tenants]] name>\" on each [[smart.tenants]] entry")


def normalise_iss(iss: str) -> str:
    """The documented normalisation before the allow-list match: strip one trailing slash."""
    return iss[:-1] if iss.endswith("/") else iss


def from_section(section: dict[str, Any], var_dir: Path) -> SmartConfig:
    """Build the typed configuration from the `[smart]` table (env overrides already applied)."""
    raw_tenants = list(section.get("tenants", []))
    if section.get("demo_ehr"):
        raw_tenants.append(demo_tenant(str(section["demo_ehr"]), var_dir))
    tenants = tuple(_tenant(i, t) for i, t in enumerate(raw_tenants))
    names = [t.name for t in tenants]
    if len(set(names)) != len(names):
        raise SmartConfigError(f"[smart] tenant names must be unique, got {names}")
    _one_tenant_per_iss(tenants)
    key_file = section.get("token_key_file")
    return SmartConfig(
        tenants=tenants,
        session_idle_minutes=_number(section, "session_idle_minutes", 15.0),
        session_absolute_hours=_number(section, "session_absolute_hours", 8.0),
        cookie_name=str(section.get("cookie_name", "refloop_smart")),
        token_key_file=Path(key_file) if key_file else var_dir / "smart-token.key",
        http_timeout_seconds=_number(section, "http_timeout_seconds", 10.0),
        launch_states_per_source=_count(section, "launch_states_per_source", 20),
        launch_states_max=_count(section, "launch_states_max", 10_000),
    )


def _one_tenant_per_iss(tenants: tuple[Tenant, ...]) -> None:
    """A launch names only its `iss`, so an `iss` in two tenants' allow-lists would always be
    the first one's: its client, its organisation's referrals. Refused rather than guessed."""
    owner: dict[str, str] = {}
    for tenant in tenants:
        for iss in {normalise_iss(i) for i in tenant.issuers}:
            if iss in owner:
                raise SmartConfigError(
                    f"[[smart.tenants]] {owner[iss]!r} and {tenant.name!r} both allow iss "
                    f"{iss!r}: a launch names only its iss, so every launch from that EHR "
                    "would be the first tenant's (its client, its organisation's referrals). "
                    "List each EHR's iss in one tenant only")
            owner[iss] = tenant.name


#: the tenant `refloop demo` sets up for its demo EHR (refloop/demo_ehr.py)
DEMO_TENANT = "demo-ehr"
DEMO_CLIENT_ID = "refloop-demo"
DEMO_KID = "refloop-demo-1"


def demo_key_file(var_dir: Path) -> Path:
    return var_dir / "demo-ehr" / "smart-client-key.pem"


def demo_tenant(fhir_base: str, var_dir: Path) -> dict[str, Any]:
    """`demo_ehr = "<the demo EHR's FHIR base>"` (set by `refloop demo` for the server it leaves
    running): a tenant for that EHR with its client key under var/demo-ehr."""
    parts = urlsplit(fhir_base)
    return {"name": DEMO_TENANT, "iss": [fhir_base], "client_id": DEMO_CLIENT_ID,
            "ehr_origins": [f"{parts.scheme}://{parts.netloc}"],
            "private_key_file": str(demo_key_file(var_dir)), "kid": DEMO_KID}


def _tenant(index: int, raw: dict[str, Any]) -> Tenant:
    where = f"[[smart.tenants]] #{index + 1}"
    for key in ("name", "iss", "client_id", "ehr_origins"):
        if not raw.get(key):
            raise SmartConfigError(f"{where}: '{key}' is required")
    issuers = raw["iss"] if isinstance(raw["iss"], list) else [raw["iss"]]
    origins = raw["ehr_origins"] if isinstance(raw["ehr_origins"], list) else [raw["ehr_origins"]]
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise SmartConfigError(f"{where}: ehr_origins entry {origin!r} must be an origin "
                                   "like https://ehr.example.org (scheme and host, no path)")
    secret = str(raw.get("client_secret", ""))
    if raw.get("client_secret_env"):
        secret = os.environ.get(str(raw["client_secret_env"]), "")
    key_file = Path(raw["private_key_file"]) if raw.get("private_key_file") else None
    if not secret and key_file is None:
        raise SmartConfigError(f"{where}: set private_key_file and kid (private_key_jwt) or "
                               "client_secret / client_secret_env (client_secret_basic)")
    if key_file is not None and not raw.get("kid"):
        raise SmartConfigError(f"{where}: private_key_file needs a 'kid' (published in the JWKS)")
    return Tenant(
        name=str(raw["name"]), issuers=tuple(str(i) for i in issuers),
        client_id=str(raw["client_id"]), ehr_origins=tuple(o.rstrip("/") for o in origins),
        scopes=" ".join(str(raw.get("scopes", DEFAULT_SCOPES)).split()),
        client_secret=secret, private_key_file=key_file, kid=str(raw.get("kid", "")),
        signing_alg=str(raw.get("signing_alg", "RS384")),
        fhir_servers=tuple(str(f) for f in _listed(raw.get("fhir_servers"))),
        access_tenant=_access_tenant(where, raw),
    )


def _access_tenant(where: str, raw: dict[str, Any]) -> str:
    if "sources" in raw:
        raise SmartConfigError(f"{where}: 'sources' is not a [[smart.tenants]] key; define the "
                               "organisation's sources once in [[access.tenants]] and name it "
                               "here with access_tenant = \"<name>\"")
    value = raw.get("access_tenant", "")
    if not isinstance(value, str):
        raise SmartConfigError(f"{where}: access_tenant must be the name of an "
                               "[[access.tenants]] entry")
    return value


def _listed(value: Any) -> list[Any]:
    if value in (None, ""):
        return []
    return value if isinstance(value, list) else [value]


def _count(section: dict[str, Any], key: str, default: int) -> int:
    value = _number(section, key, default)
    if value < 1 or value != int(value):
        raise SmartConfigError(f"[smart] {key} must be a whole number of at least 1")
    return int(value)


def _number(section: dict[str, Any], key: str, default: float) -> float:
    try:
        return float(section.get(key, default))
    except (TypeError, ValueError) as exc:
        raise SmartConfigError(f"[smart] {key} must be a number") from exc
