"""The `[access]` table: token lifetime and tenants (with their external authorization servers),
typed and checked."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from referrals.errors import RefloopError

DEFAULT_TOKEN_LIFETIME = 300  # SMART Backend Services: SHOULD NOT exceed five minutes


class AccessConfigError(RefloopError):
    """The [access] table is wrong; the message names the key and what to do."""


@dataclass(frozen=True)
class Tenant:
    """An organisation: the referral sources that are its data and, optionally, the external
    authorization server whose tokens Refloop accepts for it."""

    name: str
    sources: tuple[str, ...]
    issuer: str = ""
    jwks_uri: str = ""
    introspection_url: str = ""
    introspection_client_id: str = ""
    introspection_client_secret: str = field(default="", repr=False)
    audience: str = ""

    def audience_for(self, fhir_base: str) -> str:
        return self.audience or fhir_base


@dataclass(frozen=True)
class AccessConfig:
    token_lifetime_seconds: int = DEFAULT_TOKEN_LIFETIME
    tenants: tuple[Tenant, ...] = ()
    http_timeout_seconds: float = 10.0

    def tenant(self, name: str | None) -> Tenant | None:
        return next((t for t in self.tenants if t.name == name), None)

    def tenant_for_issuer(self, issuer: str) -> Tenant | None:
        return next((t for t in self.tenants if t.issuer and t.issuer == issuer), None)

    @property
    def introspecting(self) -> Tenant | None:
        return next((t for t in self.tenants if t.introspection_url), None)


def from_section(section: dict[str, Any]) -> AccessConfig:
    tenants = tuple(_tenant(i, raw) for i, raw in enumerate(section.get("tenants", [])))
    names = [t.name for t in tenants]
    if len(set(names)) != len(names):
        raise AccessConfigError(f"[access] tenant names must be unique, got {names}")
    issuers = [t.issuer for t in tenants if t.issuer]
    if len(set(issuers)) != len(issuers):
        raise AccessConfigError("[access] two tenants name the same issuer; each external "
                                "authorization server belongs to one tenant")
    introspecting = [t.name for t in tenants if t.introspection_url]
    if len(introspecting) > 1:
        raise AccessConfigError(
            f"[access] tenants {', '.join(introspecting)} all use introspection_url; only one "
            "may, because a token that is not a JWT names no issuer, and sending it to every "
            "tenant's server would show one tenant's tokens to another. Use jwks_uri (JWT "
            "access tokens) for the others.")
    lifetime = _number(section, "token_lifetime_seconds", DEFAULT_TOKEN_LIFETIME)
    if not 10 <= lifetime <= 3600:
        raise AccessConfigError("[access] token_lifetime_seconds must be between 10 and 3600 "
                                "(SMART recommends 300)")
    return AccessConfig(token_lifetime_seconds=int(lifetime), tenants=tenants,
                        http_timeout_seconds=_number(section, "http_timeout_seconds", 10.0))


#: source-key kinds whose every organisation shares the kind: a source must name one of them
SHARED_KINDS = ("fhir", "hl7")


def _check_sources(where: str, sources: list[str]) -> None:
    """A source naming only a kind (`fhir`, `hl7|`) would be every FHIR server's (or every v2
    sender's) referrals: refused, since it is a typo far more often than an intent."""
    for source in sources:
        if source.rstrip("|") in SHARED_KINDS:
            raise AccessConfigError(
                f"{where}: source {source!r} names no FHIR server or sending facility, so it "
                "would be every organisation's referrals of that kind; write "
                "\"fhir|<FHIR base>\" or \"hl7|<sending facility>\"")


def _tenant(index: int, raw: Any) -> Tenant:
    where = f"[[access.tenants]] #{index + 1}"
    if not isinstance(raw, dict) or not raw.get("name"):
        raise AccessConfigError(f"{where}: 'name' is required")
    sources = raw.get("sources", [])
    if isinstance(sources, str):
        sources = [sources]
    if not sources or not all(isinstance(s, str) and s for s in sources):
        raise AccessConfigError(f"{where}: 'sources' must list the referral sources of this "
                                "tenant, e.g. [\"fhir|https://ehr.example.org/fhir\", "
                                "\"hl7|CLINIC\"] (see 'refloop referrals list --json', "
                                "source_key)")
    _check_sources(where, sources)
    issuer = str(raw.get("issuer", ""))
    jwks_uri = str(raw.get("jwks_uri", ""))
    introspection = str(raw.get("introspection_url", ""))
    if (jwks_uri or introspection) and not issuer:
        raise AccessConfigError(f"{where}: jwks_uri and introspection_url need 'issuer' (the "
                                "authorization server's issuer identifier, the iss of its "
                                "tokens)")
    for key, url in (("jwks_uri", jwks_uri), ("introspection_url", introspection)):
        if url:
            _check_url(where, key, url)
    secret = str(raw.get("introspection_client_secret", ""))
    if raw.get("introspection_client_secret_env"):
        secret = os.environ.get(str(raw["introspection_client_secret_env"]), "")
    return Tenant(name=str(raw["name"]), sources=tuple(str(s).rstrip("|") for s in sources),
                  issuer=issuer, jwks_uri=jwks_uri, introspection_url=introspection,
                  introspection_client_id=str(raw.get("introspection_client_id", "")),
                  introspection_client_secret=secret, audience=str(raw.get("audience", "")))


def _check_url(where: str, key: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.netloc:
        return
    if parts.scheme == "http" and is_loopback(parts.hostname or ""):
        return
    raise AccessConfigError(f"{where}: {key} {url!r} must be an https URL (plain http only on "
                            "the loopback interface)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _number(section: dict[str, Any], key: str, default: float) -> float:
    try:
        return float(section.get(key, default))
    except (TypeError, ValueError) as exc:
        raise AccessConfigError(f"[access] {key} must be a number") from exc
