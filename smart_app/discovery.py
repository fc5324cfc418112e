"""SMART discovery: `.well-known/smart-configuration`, falling back to the CapabilityStatement's
deprecated `oauth-uris` extension only for old servers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from referrals.errors import PeerError
from smart_app.client import EhrHttp

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


@dataclass(frozen=True)
class ServerMeta:
    authorization_endpoint: str
    token_endpoint: str
    issuer: str = ""
    jwks_uri: str = ""
    capabilities: tuple[str, ...] = ()
    auth_methods: tuple[str, ...] = ()
    code_challenge_methods: tuple[str, ...] = ()
    source: str = "smart-configuration"

    @property
    def supports_post(self) -> bool:
        return "authorize-post" in self.capabilities

    def supports_private_key_jwt(self) -> bool:
        """Advertised, or nothing advertised at all (old servers): then we try it."""
        if not self.auth_methods and not self.capabilities:
            return True
        return "private_key_jwt" in self.auth_methods or \
            "client-confidential-asymmetric" in self.capabilities


def discover(iss: str, http: EhrHttp) -> ServerMeta:
    """Discover the EHR's endpoints from `iss` (already allow-listed); raise PeerError."""
    base = iss if iss.endswith("/") else iss + "/"
    doc = http.try_get_json(base + ".well-known/smart-configuration")
    if doc and doc.get("token_endpoint"):
        return _from_well_known(doc, base, http)
    metadata = http.try_get_json(base + "metadata", accept="application/fhir+json")
    if metadata:
        found = _from_capability(metadata, base)
        if found is not None:
            return found
    raise PeerError(f"{iss} publishes neither .well-known/smart-configuration nor the "
                    "oauth-uris extension in its CapabilityStatement; it cannot launch SMART apps")


def _from_well_known(doc: dict[str, Any], base: str, http: EhrHttp) -> ServerMeta:
    def absolute(key: str) -> str:
        value = doc.get(key) or ""
        return urljoin(base, str(value)) if value else ""

    issuer, jwks = str(doc.get("issuer") or ""), absolute("jwks_uri")
    if issuer and not jwks:
        oidc = http.try_get_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
        jwks = str((oidc or {}).get("jwks_uri") or "")
    if not doc.get("authorization_endpoint"):
        raise PeerError(f"{base}.well-known/smart-configuration has no authorization_endpoint")
    return ServerMeta(
        authorization_endpoint=absolute("authorization_endpoint"),
        token_endpoint=absolute("token_endpoint"), issuer=issuer, jwks_uri=jwks,
        capabilities=tuple(doc.get("capabilities") or ()),
        auth_methods=tuple(doc.get("token_endpoint_auth_methods_supported") or ()),
        code_challenge_methods=tuple(doc.get("code_challenge_methods_supported") or ()),
    )


def _from_capability(statement: dict[str, Any], base: str) -> ServerMeta | None:
    for rest in statement.get("rest") or []:
        for ext in (rest.get("security") or {}).get("extension") or []:
            if ext.get("url") != OAUTH_URIS:
                continue
            uris = {e.get("url"): e.get("valueUri") for e in ext.get("extension") or []}
            if uris.get("authorize") and uris.get("token"):
                return ServerMeta(authorization_endpoint=urljoin(base, uris["authorize"]),
                                  token_endpoint=urljoin(base, uris["token"]),
                                  source="capability-statement")
    return None
