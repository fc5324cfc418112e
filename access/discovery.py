"""What Refloop publishes about its authorization: `/.well-known/smart-configuration` and the
CapabilityStatement's `rest.security` (SMART App Launch 2.x, Backend Services)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from access.scopes import INTERACTIONS
from access.server import ALGORITHMS

TOKEN_PATH = "/auth/token"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"


def supported_scopes(interactions: Iterable[tuple[str, str]]) -> list[str]:
    """system/, user/ and patient/ scopes for each protected resource type's permissions."""
    permissions: dict[str, set[str]] = {}
    for resource_type, interaction in interactions:
        permissions.setdefault(resource_type, set()).add(INTERACTIONS[interaction])
    found = []
    for resource_type, perms in sorted(permissions.items()):
        text = "".join(p for p in "cruds" if p in perms)
        found += [f"{context}/{resource_type}.{text}" for context in ("system", "user",
                                                                        "patient")]
    return found


def smart_configuration(base_url: str, scopes: list[str]) -> dict[str, Any]:
    return {
        "token_endpoint": base_url + TOKEN_PATH,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ALGORITHMS,
        "scopes_supported": scopes,
        "response_types_supported": [],
        # required by the document's schema; there is no authorization endpoint to apply it to
        "code_challenge_methods_supported": ["S256"],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2",
                         "permission-user", "permission-patient"],
    }


def capability_security(base_url: str) -> dict[str, Any]:
    """CapabilityStatement.rest.security: the SMART service and the token endpoint."""
    return {
        "cors": False,
        "service": [{"coding": [{"system": SECURITY_SERVICE, "code": "SMART-on-FHIR",
                                 "display": "SMART-on-FHIR"}],
                     "text": "OAuth 2.0 bearer tokens (SMART Backend Services; SMART v2 "
                             "scopes)"}],
        "extension": [{"url": OAUTH_URIS, "extension": [
            {"url": "token", "valueUri": base_url + TOKEN_PATH}]}],
        "description": "Every interaction except the CapabilityStatement needs a bearer token "
                       "from the token endpoint (client_credentials with private_key_jwt) or "
                       "from a tenant's authorization server. See "
                       f"{base_url}/.well-known/smart-configuration.",
    }
