"""The launch flow, free of Flask: start (allow-list, discovery, authorize request) and finish
(state, code exchange, id_token, context, session), plus refresh before expiry."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from referrals.errors import PeerError
from smart_app import auth
from smart_app.auth import AuthorizeRequest, LaunchError
from smart_app.client import EhrHttp
from smart_app.config import SmartConfig, Tenant
from smart_app.context import LaunchContext, from_token_response, split_scope
from smart_app.discovery import ServerMeta, discover
from smart_app.patient_label import display_name
from smart_app.sessions import Session, SessionStore
from smart_app.tokens import new_secret

log = logging.getLogger("refloop.smart.launch")

REFRESH_AHEAD = timedelta(seconds=60)
DISCOVERY_TTL = 300.0


@dataclass
class Launcher:
    config: SmartConfig
    sessions: SessionStore
    http: EhrHttp
    _cache: dict[str, tuple[float, ServerMeta]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, browser: str, *, iss: str, launch: str | None,
              redirect_uri: str, source: str = "") -> AuthorizeRequest:
        """Check `iss` against the allow-list BEFORE any request, discover, build the request."""
        tenant = self.config.tenant_for_iss(iss)
        if tenant is None:
            log.warning("launch refused: iss not allowed", extra={"outcome": "iss-not-allowed"})
            raise LaunchError("this EHR is not registered to launch Refloop (its FHIR base URL "
                              "is not in any tenant's allow-list); ask IT to add it under "
                              "[[smart.tenants]] iss")
        meta = self.meta(iss)
        if meta.code_challenge_methods and "S256" not in meta.code_challenge_methods:
            raise LaunchError("the EHR does not support PKCE S256, which SMART requires; "
                              "the launch is refused")
        verifier, nonce = auth.new_code_verifier(), new_secret()
        scope = launch_scope(tenant, ehr_launch=bool(launch))
        state = self.sessions.begin_launch(browser, tenant=tenant.name, iss=iss, launch=launch,
                                           code_verifier=verifier, nonce=nonce,
                                           redirect_uri=redirect_uri, source=source)
        log.info("launch started", extra={"tenant": tenant.name, "ehr_launch": bool(launch)})
        return auth.build_authorize_request(meta, tenant, iss=iss, launch=launch, scope=scope,
                                            state=state, nonce=nonce, code_verifier=verifier,
                                            redirect_uri=redirect_uri)

    def finish(self, browser: str | None, *, state: str, code: str) -> Session:
        pending = self.sessions.consume_state(state, browser)
        if pending is None:
            log.warning("callback refused: unknown, reused or foreign state",
                        extra={"outcome": "bad-state"})
            raise LaunchError("this launch link was already used, has expired, or was started "
                              "in another window; relaunch Refloop from the EHR")
        tenant = self._tenant(pending.tenant)
        meta = self.meta(pending.iss)
        try:
            token = auth.exchange_code(meta, tenant, code=code,
                                       code_verifier=pending.code_verifier,
                                       redirect_uri=pending.redirect_uri,
                                       timeout=self.config.http_timeout_seconds)
        except PeerError as exc:
            log.warning("launch failed: code exchange refused",
                        extra={"tenant": tenant.name, "iss": pending.iss,
                               "client_id": tenant.client_id, "cause": str(exc)[:400],
                               "outcome": "token-refused"})
            raise
        if str(token.get("token_type", "")).lower() != "bearer" or not token.get("access_token"):
            raise LaunchError("the EHR's token response has no bearer access token")
        claims = self._id_claims(meta, tenant, token, pending.nonce)
        context = self._enrich(from_token_response(token, claims, pending.iss), pending.iss,
                               str(token["access_token"]))
        session = self.sessions.create(
            browser or "", tenant=tenant.name, iss=pending.iss, context=context,
            tokens=_kept(token), token_expires_at=_expiry(token))
        log.info("launch completed", extra={"tenant": tenant.name, "user": context.user,
                                            "granted_scopes": len(context.scope)})
        return session

    def fresh(self, session: Session) -> Session | None:
        """The session with a valid EHR token, refreshing ahead of expiry; None when it ended."""
        expires = session.token_expires_at
        if expires is None or expires - REFRESH_AHEAD > datetime.now(UTC):
            return session
        tokens = self.sessions.tokens(session)
        if not tokens.get("refresh_token"):
            if expires > datetime.now(UTC):
                return session
            self.sessions.end(session.id)
            return None
        meta = self.meta(session.iss)
        try:
            new = auth.refresh(meta, self._tenant(session.tenant),
                               refresh_token=tokens["refresh_token"],
                               timeout=self.config.http_timeout_seconds)
        except PeerError:
            log.warning("token refresh refused; session ended", extra={"outcome": "refresh"})
            self.sessions.end(session.id)
            return None
        kept = _kept(new)
        kept["refresh_token"] = new.get("refresh_token") or tokens["refresh_token"]
        expiry = _expiry(new)
        if not self.sessions.replace_tokens(session, kept, expiry):
            return session  # another request refreshed first; its tokens are stored
        log.info("token refreshed", extra={"tenant": session.tenant,
                                           "new_refresh_token": bool(new.get("refresh_token"))})
        granted = split_scope(str(new.get("scope") or "")) or session.context.scope
        return replace(session, token_expires_at=expiry, version=session.version + 1,
                       sealed_tokens=self.sessions.vault.seal(kept),
                       context=replace(session.context, scope=granted))

    def meta(self, iss: str) -> ServerMeta:
        with self._lock:
            cached = self._cache.get(iss)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        meta = discover(iss, self.http)
        with self._lock:
            self._cache[iss] = (time.monotonic() + DISCOVERY_TTL, meta)
        return meta

    def _tenant(self, name: str) -> Tenant:
        tenant = self.config.tenant(name)
        if tenant is None:
            raise LaunchError("this EHR's tenant was removed from the configuration; relaunch")
        return tenant

    def _id_claims(self, meta: ServerMeta, tenant: Tenant, token: dict[str, Any],
                   nonce: str) -> dict[str, Any]:
        id_token = token.get("id_token")
        if not id_token:
            raise LaunchError("the EHR sent no id_token, so the user is unknown; grant the "
                              "'openid fhirUser' scopes to this app")
        if not meta.jwks_uri or not meta.issuer:
            raise LaunchError("the EHR publishes no issuer or jwks_uri, so its id_token cannot "
                              "be verified")
        jwks = self.http.get_json(meta.jwks_uri)
        return auth.validate_id_token(str(id_token), jwks=jwks, issuer=meta.issuer,
                                      client_id=tenant.client_id, nonce=nonce)

    def _enrich(self, context: LaunchContext, iss: str, access_token: str) -> LaunchContext:
        """Names for the header and banner, read from the EHR with the user's token when the
        granted scopes allow; otherwise say what is missing."""
        base = iss.rstrip("/")
        notes = list(context.notes)
        user_display = patient_display = ""
        user_type = context.user.split("/")[0]
        if context.can_read(user_type):
            found = self.http.try_get_json(f"{base}/{context.user}", bearer=access_token,
                                           accept="application/fhir+json")
            user_display = display_name(found) if found else ""
        else:
            notes.append(f"The EHR did not grant read access to {user_type}; your name is not "
                         "shown.")
        if context.patient:  # the banner, and the patient-scoped worklist, name them
            if context.can_read("Patient"):
                found = self.http.try_get_json(f"{base}/{context.patient}", bearer=access_token,
                                               accept="application/fhir+json")
                patient_display = display_name(found) if found else ""
            else:
                notes.append("The EHR did not grant read access to Patient; the patient is "
                             "shown by their id only.")
        return replace(context, user_display=user_display, patient_display=patient_display,
                       notes=tuple(notes))


def launch_scope(tenant: Tenant, *, ehr_launch: bool) -> str:
    """The tenant's scopes; a standalone launch drops `launch` (there is no launch handle)."""
    scopes = tenant.scopes.split()
    if not ehr_launch:
        scopes = [s for s in scopes if s != "launch"]
    return " ".join(scopes)


def _kept(token: dict[str, Any]) -> dict[str, Any]:
    return {k: token[k] for k in ("access_token", "refresh_token", "token_type", "scope")
            if token.get(k)}


def _expiry(token: dict[str, Any]) -> datetime | None:
    try:
        seconds = float(token["expires_in"])
    except (KeyError, TypeError, ValueError):
        return None
    return datetime.now(UTC) + timedelta(seconds=seconds)
