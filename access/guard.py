"""The guard in front of protected routes: it reads the bearer token (RFC 6750), accepts tokens
Refloop issued or a tenant's authorization server issued, and checks scopes.

Protecting a route (the one way to do it, for every adapter):

    guard.require("system/MeasureReport.rs")      # a decorator: any one of the scopes
    guard.protect(blueprint, "metrics:read")      # every route of a blueprint
    guard.protect(blueprint, "metrics:read", whole=True)   # figures of every tenant: a token
                                                  # limited to a tenant or a patient gets 403
    guard.fhir("Task", "read")                    # FHIR interaction; the view gets grant=, reach=

A resource scope is checked the SMART way (`system/*.rs` covers `system/Task.rs`); any other
scope name is matched exactly. No token or a bad one: 401 with `WWW-Authenticate`; a good token
without the scope: 403. Both bodies are OperationOutcomes and carry `Cache-Control: no-store`.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, Response, request

from access import scopes as smart_scopes
from access.config import AccessConfig
from access.external import ExternalTokens
from access.grant import Grant, InvalidToken
from access.tokens import TokenStore

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("refloop.access")

REALM = "refloop"
FHIR_JSON = "application/fhir+json"
_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
MAX_TOKEN = 8192


class Refused(Exception):
    """A request the guard does not let through; `response()` is what to send."""

    def __init__(self, status: int, description: str, *, error: str = "",
                 scope: str = "") -> None:
        super().__init__(description)
        self.status, self.description, self.error, self.scope = status, description, error, scope

    def response(self) -> Response:
        challenge = [f'realm="{REALM}"']
        if self.error:
            challenge.append(f'error="{self.error}"')
            challenge.append(f'error_description="{_quoted(self.description)}"')
        if self.scope:
            challenge.append(f'scope="{self.scope}"')
        code = "login" if self.status == 401 else "forbidden"
        body = {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": code, "diagnostics": self.description}]}
        return Response(json.dumps(body), status=self.status, mimetype=FHIR_JSON, headers={
            "WWW-Authenticate": "Bearer " + ", ".join(challenge), "Cache-Control": "no-store"})


class Guard:
    def __init__(self, tokens: TokenStore, external: ExternalTokens,
                 config: AccessConfig) -> None:
        self.tokens = tokens
        self.external = external
        self.config = config
        #: (resource type, interaction) of every route protected with fhir(), for discovery
        self.fhir_interactions: list[tuple[str, str]] = []

    # -- authentication ----------------------------------------------------------------------
    def authenticate(self, authorization: str | None) -> Grant:
        """The grant for an `Authorization` header value; raises Refused (401)."""
        if not authorization:
            raise Refused(401, "this API needs an OAuth 2.0 bearer token: get one at the "
                          "token endpoint named in /.well-known/smart-configuration")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Refused(401, "use 'Authorization: Bearer <token>'", error="invalid_request")
        if len(token) > MAX_TOKEN or not _TOKEN.match(token):
            raise Refused(401, "the bearer token is malformed", error="invalid_token")
        # Refloop's own tokens are URL-safe base64 without dots; a JWT is never one of them
        issued = self.tokens.find(token) if "." not in token else None
        if issued is not None:
            tenant = self.config.tenant(issued.tenant)
            # a client of a tenant that is no longer configured reaches nothing
            sources = tenant.sources if tenant else (() if issued.tenant else None)
            return Grant(client_id=issued.client_id, scopes=issued.scopes,
                         tenant=issued.tenant, sources=sources)
        try:
            grant = self.external.check(token)
        except InvalidToken as exc:
            raise Refused(401, str(exc), error="invalid_token") from exc
        if grant is None:
            raise Refused(401, "the token is not known: expired, revoked, or not issued by "
                          "Refloop or a configured authorization server", error="invalid_token")
        return grant

    def grant_for(self, scopes: tuple[str, ...], *, whole: bool = False) -> Grant:
        """Authenticate the current request and check it holds one of `scopes` (and, when the
        route answers for the `whole` deployment, that the token is not limited)."""
        grant = self.authenticate(request.headers.get("Authorization"))
        if scopes and not any(satisfies(grant, s) for s in scopes):
            raise Refused(403, f"the token lacks the scope this needs ({' or '.join(scopes)})",
                          error="insufficient_scope", scope=" ".join(scopes))
        if whole and grant.limit:
            raise Refused(403, f"this answers for the whole deployment, every tenant's "
                          f"referrals; a token limited to {grant.limit} cannot read it (use a "
                          "client registered without --tenant)", error="insufficient_scope",
                          scope=" ".join(scopes))
        return grant

    # -- the ways to protect a route ---------------------------------------------------------
    def require(self, *scopes: str) -> Callable[[F], F]:
        """A decorator: the view runs only for a token holding one of `scopes`."""
        def decorate(view: F) -> F:
            @functools.wraps(view)
            def guarded(*args: Any, **kwargs: Any) -> Any:
                try:
                    self.grant_for(scopes)
                except Refused as exc:
                    _log_refusal(exc)
                    return exc.response()
                return view(*args, **kwargs)
            return guarded  # type: ignore[return-value]
        return decorate

    def protect(self, blueprint: Blueprint, *scopes: str, whole: bool = False) -> None:
        """Every route of `blueprint` needs a token holding one of `scopes`; `whole`: the
        routes answer for the whole deployment, so a token limited to a tenant or a patient
        is refused (403)."""
        @blueprint.before_request
        def _guard() -> Response | None:
            try:
                self.grant_for(scopes, whole=whole)
            except Refused as exc:
                _log_refusal(exc)
                return exc.response()
            return None

    def fhir(self, resource_type: str, interaction: str) -> Callable[[F], F]:
        """A decorator for a FHIR interaction: the view gets `grant` and `reach` (the data the
        token may see: all, a tenant's sources, one patient)."""
        self.fhir_interactions.append((resource_type, interaction))

        def decorate(view: F) -> F:
            @functools.wraps(view)
            def guarded(*args: Any, **kwargs: Any) -> Any:
                try:
                    grant = self.authenticate(request.headers.get("Authorization"))
                    reach = grant.reach(resource_type, interaction)
                    if reach is None:
                        raise Refused(403, _missing(grant, resource_type, interaction),
                                      error="insufficient_scope",
                                      scope=smart_scopes.needed(resource_type, interaction))
                except Refused as exc:
                    _log_refusal(exc)
                    return exc.response()
                return view(*args, grant=grant, reach=reach, **kwargs)
            return guarded  # type: ignore[return-value]
        return decorate


def satisfies(grant: Grant, scope: str) -> bool:
    """True when the grant's scopes allow `scope` (SMART coverage, or the exact name)."""
    return bool(smart_scopes.allowed([scope], grant.scopes))


def _missing(grant: Grant, resource_type: str, interaction: str) -> str:
    contexts = smart_scopes.granting_contexts(grant.scopes, resource_type, interaction)
    if "user" in contexts:
        return (f"a user/ scope for {resource_type} needs a tenant; this token's issuer is not "
                "configured under [[access.tenants]]")
    if "patient" in contexts:
        return (f"a patient/ scope for {resource_type} needs a patient in context, and this "
                "token names none")
    return (f"the token has no scope that allows {interaction} on {resource_type} "
            f"(e.g. {smart_scopes.needed(resource_type, interaction)})")


def _log_refusal(exc: Refused) -> None:
    log.info("access refused", extra={"status": exc.status, "reason": exc.error or "no-token",
                                      "path": request.url_rule.rule if request.url_rule
                                      else "(unmatched)"})


def _quoted(text: str) -> str:
    return text.replace("\\", "").replace('"', "'")
