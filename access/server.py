"""The authorization server for system clients, built on authlib's server components: the
`client_credentials` grant with `private_key_jwt` client authentication (RFC 7523), as SMART
Backend Services profiles it (RS384 or ES384, a kid, exp at most five minutes ahead, aud = the
token URL, a jti never seen before for that client)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Payload, FlaskOAuth2Request
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from flask import Response
from flask import request as flask_request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from access.clients import AUTH_METHOD, Client, ClientRegistry
from access.keys import KeyCache
from access.tokens import TokenStore, new_token
from referrals.errors import PeerError

log = logging.getLogger("refloop.access")

ALGORITHMS = ["RS384", "ES384"]
MAX_ASSERTION_LIFETIME = 300  # seconds: SMART allows exp at most five minutes ahead
LEEWAY = 60  # seconds of clock skew tolerated


class BackendServicesGrant(ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = [AUTH_METHOD]

    def validate_requested_scope(self) -> None:
        """invalid_scope, saying what to ask for: the client is authenticated by now, so its
        registered scopes are named (authlib's text named neither what was wrong nor what to
        ask for)."""
        super().validate_requested_scope()
        client: Client = self.request.client
        requested = self.request.payload.scope or ""
        if client.get_allowed_scope(requested) is not None:
            return
        registered = " ".join(client.scopes)[:300]
        if not requested.strip():
            raise InvalidScopeError(f"a scope is required (SMART Backend Services); this client "
                                    f"registered: {registered}")
        raise InvalidScopeError(f"none of the requested scopes is registered for this client; "
                                f"it may ask for: {registered}")


class ClientAssertion(JWTBearerClientAssertion):
    """RFC 7523 client authentication with SMART's rules on top of authlib's checks."""

    CLIENT_AUTH_METHOD = AUTH_METHOD

    def __init__(self, token_url: Callable[[], str], keys: KeyCache, tokens: TokenStore
                 ) -> None:
        super().__init__(validate_jti=True, leeway=LEEWAY)
        self._token_url = token_url
        self._keys = keys
        self._tokens = tokens

    def get_audiences(self) -> list[str]:
        return [self._token_url()]

    def resolve_client_public_key(self, client: Client) -> Callable[[Any], Any]:
        def pick(token: Any) -> Any:
            header = token.headers()
            kid = header.get("kid")
            if not kid:
                raise InvalidClientError(description="the assertion header has no kid")
            if header.get("jku") and header["jku"] != client.jwks_url:
                raise InvalidClientError(description="jku is not the registered JWKS URL")
            if client.jwks is not None:
                return KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
            assert client.jwks_url is not None
            try:
                return self._keys.get(client.jwks_url, kid)
            except PeerError as exc:
                log.warning("client keys unavailable", extra={"client_id": client.client_id,
                                                              "reason": str(exc)})
                raise InvalidClientError(description="the client's JWK Set cannot be "
                                         "fetched") from exc

        return pick

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ALGORITHMS)
        except (JoseError, ValueError) as exc:
            raise InvalidClientError(description="the client assertion does not verify with a "
                                     f"registered key and {' or '.join(ALGORITHMS)}") from exc
        self.verify_claims(token.claims)
        return token.claims

    def verify_claims(self, claims: Any) -> None:
        named = flask_request.form.get("client_id")
        if named is not None and named != claims.get("sub"):  # RFC 7521 4.2: the same client
            raise InvalidClientError(description="client_id names another client than the "
                                     "assertion")
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp > time.time() + MAX_ASSERTION_LIFETIME + LEEWAY:
            raise InvalidClientError(description="exp is more than five minutes ahead")
        super().verify_claims(claims)

    def validate_jti(self, claims: Any, jti: str) -> bool:
        expires = datetime.fromtimestamp(float(claims["exp"]), UTC) + timedelta(seconds=LEEWAY)
        return self._tokens.use_assertion(str(claims["sub"]), str(jti), expires)


class TokenRequest(FlaskOAuth2Request):
    """The token request as authlib sees it, with the configured token URL as its URI: the
    Host header (and a proxy's http hop) never decides what URL authlib checks."""

    def __init__(self, request: Any, uri: str) -> None:
        OAuth2Request.__init__(self, method=request.method, uri=uri, headers=request.headers)
        self._request = request
        self.payload = FormPayload(request)


class FormPayload(FlaskOAuth2Payload):
    """The token request's parameters: its form body alone (authlib's reads the query string
    first, while the client's assertion is read from the form)."""

    @property
    def data(self) -> Any:
        return self._request.form


def check_parameters(request: Any) -> None:
    """RFC 6749 3.2: the parameters come in the form body, each once; a query string or a
    repeated parameter is refused, never read one way or the other."""
    if request.query_string:
        raise InvalidRequestError("send the parameters in the form body, not in the query "
                                  "string (RFC 6749 3.2)")
    repeated = sorted({name for name in request.form if len(request.form.getlist(name)) > 1})
    if repeated:
        named = ", ".join(name[:40] for name in repeated[:5])
        raise InvalidRequestError(f"each parameter once (RFC 6749 3.2): {named} "
                                  "was given more than once")


class TokenServer(AuthorizationServer):
    def __init__(self, token_url: Callable[[], str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._token_url = token_url

    def create_oauth2_request(self, request: Any) -> TokenRequest:
        return TokenRequest(flask_request, self._token_url())

    def token_response(self) -> Response:
        """The token endpoint's answer; every refusal is an OAuth error (RFC 6749 5.2)."""
        try:
            check_parameters(flask_request)
            return self.create_token_response()
        except OAuth2Error as exc:  # raised before authlib's own handling (insecure_transport)
            return self.handle_error_response(None, exc)


def build_server(registry: ClientRegistry, tokens: TokenStore, keys: KeyCache, *,
                 token_url: Callable[[], str], lifetime: int) -> TokenServer:
    def save_token(token: dict[str, Any], request: Any) -> None:
        tokens.save(token["access_token"], client_id=request.client.client_id,
                    scopes=token.get("scope", ""), lifetime=int(token["expires_in"]))
        log.info("token issued", extra={"client_id": request.client.client_id,
                                        "scopes": token.get("scope", "")})

    server = TokenServer(token_url, query_client=registry.get, save_token=save_token)
    server.register_token_generator("default", BearerTokenGenerator(
        access_token_generator=lambda **_: new_token(), expires_generator=lifetime))
    server.register_grant(BackendServicesGrant)
    server.register_client_auth_method(AUTH_METHOD, ClientAssertion(token_url, keys, tokens))
    return server
