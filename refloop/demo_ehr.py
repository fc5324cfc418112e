"""The demo EHR: a SMART on FHIR EHR launch server (authorization server, minimal FHIR API, EHR
page) that `refloop demo` runs so a newcomer can open the app through a real EHR launch, and that
the SMART tests run as their strict EHR.

Real EHR sandboxes (Epic, Oracle) need the network and a registration, and the common open
launchers are lenient, so this one is built from authlib's server components:
authorization code with PKCE S256 only, an RS256 id_token with a JWKS endpoint, refresh tokens,
launch context in the token response. It is stricter than the lenient launchers: it refuses a
missing or short `state`, a missing or `plain` PKCE challenge, an `aud` that is not exactly its
FHIR base, an unknown `launch`, a missing `nonce` with openid; it checks private_key_jwt
assertions (alg, kid, aud = token URL, exp <= 300 s, jti never reused). Its FHIR API (a few
resources in memory) demands a bearer token it issued. Modes flip one behaviour at a time for
the negative tests (bad id_token signature, expired id_token, narrower grant, refresh without
a new refresh token, CapabilityStatement-only discovery).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import (
    ClientMixin,
    InvalidClientError,
    InvalidRequestError,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from authlib.oidc.core.models import AuthorizationCodeMixin
from flask import Flask, Response, jsonify, redirect, request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey
from werkzeug.serving import make_server

ASSERTION_METHOD = JWTBearerClientAssertion.CLIENT_AUTH_METHOD


@dataclass
class Modes:
    """Behaviours the negative tests switch on, one at a time."""

    well_known: bool = True
    bad_id_token_signature: bool = False
    id_token_exp_offset: int = 300
    drop_scopes: set[str] = field(default_factory=set)
    refresh_returns_new_token: bool = True
    expires_in: int = 3600
    need_patient_banner: bool = True
    fhir_context: list[Any] = field(default_factory=list)
    #: the token endpoint's OAuth error reply, as (error, error_description)
    token_error: tuple[str, str] | None = None


@dataclass
class Client(ClientMixin):
    client_id: str
    redirect_uris: list[str]
    scope: str
    secret: str = ""
    jwks: dict[str, Any] | None = None
    ehr: DemoEhr | None = None

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        allowed = set(self.scope.split())
        dropped = self.ehr.modes.drop_scopes if self.ehr else set()
        return " ".join(s for s in scope_to_list(scope) if s in allowed and s not in dropped)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return bool(self.secret) and secrets.compare_digest(self.secret, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.jwks is not None:
            return method == ASSERTION_METHOD
        return method == "client_secret_basic"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    context: dict[str, Any]
    nonce: str
    challenge: str
    challenge_method: str
    created: float = field(default_factory=time.time)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.created)

    def get_acr(self) -> str:
        return ""

    def get_amr(self) -> list[str]:
        return []

    def is_expired(self) -> bool:
        return time.time() - self.created > 60


@dataclass
class Token(TokenMixin):
    access_token: str
    refresh_token: str
    client_id: str
    scope: str
    user: str
    context: dict[str, Any]
    issued: float
    expires_in: int
    revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() > self.issued + self.expires_in

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> str:
        return self.user

    def get_client(self) -> Client:
        raise NotImplementedError


class StrictChallenge(CodeChallenge):
    """PKCE for every client, S256 only (`plain` is refused, as SMART requires)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def get_authorization_code_challenge(self, authorization_code: Code) -> str:
        return authorization_code.challenge

    def get_authorization_code_challenge_method(self, authorization_code: Code) -> str:
        return authorization_code.challenge_method

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'")
        super().validate_code_verifier(grant, result)


class StrictAssertion(JWTBearerClientAssertion):
    def __init__(self, ehr: DemoEhr) -> None:
        super().__init__(leeway=5)
        self.ehr = ehr

    def get_audiences(self) -> list[str]:
        return [self.ehr.base + "/auth/token"]

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        key = f"{claims['sub']}:{jti}"
        if key in self.ehr.seen_jti:
            return False
        self.ehr.seen_jti.add(key)
        return True

    def resolve_client_public_key(self, client: Client) -> KeySet:
        return KeySet.import_key_set(client.jwks or {"keys": []})  # type: ignore[arg-type]

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        """SMART asymmetric profile: RS384 or ES384 with a kid; exp at most 300 s ahead."""
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=["RS384", "ES384"])
        except JoseError as exc:
            raise InvalidClientError(description=exc.description) from exc
        if not token.header.get("kid"):
            raise InvalidClientError(description="assertion header has no kid")
        self.verify_claims(token.claims)
        if int(token.claims["exp"]) > time.time() + 300:
            raise InvalidClientError(description="assertion exp is more than 300 s ahead")
        return token.claims


class DemoEhr:
    """The EHR on 127.0.0.1 (`port` 0: a free one). `GET /launch-refloop` starts an EHR launch
    of the app at `app_launch_url` for `demo_user`, as an EHR's "open Refloop" button does."""

    def __init__(self, port: int = 0, *, app_launch_url: str = "",
                 demo_user: str = "Practitioner/coord-1") -> None:
        self.app_launch_url = app_launch_url
        self.demo_user = demo_user
        self.modes = Modes()
        self.key = RSAKey.generate_key(2048, parameters={"kid": "ehr-1", "alg": "RS256"})
        self.other_key = RSAKey.generate_key(2048, parameters={"kid": "ehr-1", "alg": "RS256"})
        self.clients: dict[str, Client] = {}
        self.codes: dict[str, Code] = {}
        self.tokens: dict[str, Token] = {}
        self.launches: dict[str, dict[str, Any]] = {}
        self.seen_jti: set[str] = set()
        self.requests: list[str] = []  # "GET /fhir/Practitioner/x" (no query strings)
        self.refreshes: list[str] = []  # refresh tokens presented
        self.token_responses: list[dict[str, Any]] = []
        self.resources: dict[str, dict[str, Any]] = {}
        self.standalone_user = "Practitioner/coord-1"
        self.app = self._build_app()
        self._server = make_server("127.0.0.1", port, self.app, threaded=True)
        self.port = self._server.server_port
        self.host = "127.0.0.1"
        self.base = f"http://127.0.0.1:{self.port}"
        self.fhir = self.base + "/fhir"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- control ---------------------------------------------------------------------------
    def start(self) -> DemoEhr:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()

    def register(self, client_id: str, redirect_uri: str, scope: str, *, secret: str = "",
                 jwks: dict[str, Any] | None = None) -> None:
        self.clients[client_id] = Client(client_id, [redirect_uri], scope, secret, jwks, self)

    def new_launch(self, *, user: str, patient: str = "", encounter: str = "") -> str:
        launch = secrets.token_urlsafe(12)
        self.launches[launch] = {"user": user, "patient": patient, "encounter": encounter}
        return launch

    def add(self, resource: dict[str, Any]) -> None:
        self.resources[f"{resource['resourceType']}/{resource['id']}"] = resource

    def issued_tokens(self) -> list[str]:
        values = []
        for token in self.tokens.values():
            values += [token.access_token, token.refresh_token]
        return [v for v in values if v]

    # -- app ---------------------------------------------------------------------------------
    def _build_app(self) -> Flask:
        app = Flask("demo_ehr")
        server = AuthorizationServer(app, query_client=self.clients.get,
                                     save_token=self._save_token)
        server.register_token_generator("default", self._generate_token)
        server.register_client_auth_method(ASSERTION_METHOD, StrictAssertion(self))
        ehr = self

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", ASSERTION_METHOD]

            def save_authorization_code(self, code: str, req: Any) -> None:
                data = req.payload.data
                ehr.codes[code] = Code(
                    code, req.client.client_id, data["redirect_uri"], req.payload.scope,
                    req.user["user"], req.user, data.get("nonce", ""),
                    data.get("code_challenge", ""), data.get("code_challenge_method", ""))

            def query_authorization_code(self, code: str, client: Client) -> Code | None:
                found = ehr.codes.get(code)
                if found and found.client_id == client.client_id and not found.is_expired():
                    return found
                return None

            def delete_authorization_code(self, authorization_code: Code) -> None:
                ehr.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: Code) -> dict[str, Any]:
                return authorization_code.context

        class RefreshGrant(grants.RefreshTokenGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", ASSERTION_METHOD]

            @property
            def INCLUDE_NEW_REFRESH_TOKEN(self) -> bool:
                return ehr.modes.refresh_returns_new_token

            def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
                ehr.refreshes.append(refresh_token)
                for token in ehr.tokens.values():
                    if token.refresh_token == refresh_token and not token.revoked:
                        return token
                return None

            def authenticate_user(self, refresh_token: Token) -> dict[str, Any]:
                return refresh_token.context

            def revoke_old_credential(self, refresh_token: Token) -> None:
                if ehr.modes.refresh_returns_new_token:
                    refresh_token.revoked = True

        class IdToken(OpenIDCode):
            def exists_nonce(self, nonce: str, req: Any) -> bool:
                return any(c.nonce == nonce for c in ehr.codes.values())

            def resolve_client_private_key(self, client: Client) -> RSAKey:
                return ehr.other_key if ehr.modes.bad_id_token_signature else ehr.key

            def get_client_algorithm(self, client: Client) -> str:
                return "RS256"

            def get_encode_header(self, client: Client) -> dict[str, str]:
                return {"alg": "RS256", "kid": "ehr-1"}

            def get_client_claims(self, client: Client) -> dict[str, Any]:
                now = int(time.time())
                return {"iss": ehr.base, "aud": [client.client_id], "iat": now - 5,
                        "exp": now + ehr.modes.id_token_exp_offset}

            def generate_user_info(self, user: dict[str, Any], scope: str) -> UserInfo:
                info = UserInfo(sub=user["user"].split("/")[-1])
                if "fhirUser" in scope.split():
                    info["fhirUser"] = f"{ehr.fhir}/{user['user']}"
                return info

        server.register_grant(CodeGrant, [StrictChallenge(required=True),
                                          IdToken(require_nonce=True)])
        server.register_grant(RefreshGrant)

        @app.before_request
        def _log() -> None:
            self.requests.append(f"{request.method} {request.path}")

        @app.get("/fhir/.well-known/smart-configuration")
        def well_known() -> Any:
            if not self.modes.well_known:
                return Response(status=404)
            return jsonify(self._configuration())

        @app.get("/fhir/metadata")
        def metadata() -> Any:
            return jsonify(self._capability_statement())

        @app.get("/jwks")
        def jwks() -> Any:
            return jsonify({"keys": [self.key.as_dict(private=False)]})

        @app.route("/auth/authorize", methods=["GET", "POST"])
        def authorize() -> Any:
            params = request.values
            problem = self._strict_problem(params)
            client = self.clients.get(params.get("client_id", ""))
            if problem:
                uri = params.get("redirect_uri", "")
                if client is None or not client.check_redirect_uri(uri):
                    return Response(problem, status=400)
                query = {"error": "invalid_request", "error_description": problem}
                if params.get("state"):
                    query["state"] = params["state"]
                return redirect(f"{uri}?{urlencode(query)}")
            return server.create_authorization_response(grant_user=self._user_for(params))

        @app.post("/auth/token")
        def token() -> Any:
            if self.modes.token_error:
                error, description = self.modes.token_error
                return jsonify({"error": error, "error_description": description}), 401
            response = server.create_token_response()
            if response.status_code == 200:
                self.token_responses.append(response.get_json())
            response.headers["Cache-Control"] = "no-store"
            response.headers["Pragma"] = "no-cache"
            return response

        @app.get("/fhir/<rtype>/<rid>")
        def read(rtype: str, rid: str) -> Any:
            header = request.headers.get("Authorization", "")
            token = self.tokens.get(header.removeprefix("Bearer ").strip()) \
                if header.startswith("Bearer ") else None
            if token is None or token.is_expired():
                return jsonify({"resourceType": "OperationOutcome", "issue": [
                    {"severity": "error", "code": "login"}]}), 401
            found = self.resources.get(f"{rtype}/{rid}")
            if found is None:
                return jsonify({"resourceType": "OperationOutcome"}), 404
            return jsonify(found)

        @app.get("/launch-refloop")
        def launch_refloop() -> Any:
            if not self.app_launch_url:
                return Response("no app to launch is configured", status=404)
            handle = self.new_launch(user=self.demo_user)
            query = urlencode({"iss": self.fhir, "launch": handle})
            return redirect(f"{self.app_launch_url}?{query}")

        @app.get("/")
        def home() -> Any:
            link = "<p><a href='/launch-refloop'>Open Refloop</a> (an EHR launch as " \
                f"{_attr(self.demo_user)})</p>" if self.app_launch_url else ""
            return Response("<!doctype html><html lang='en'><head><title>Demo EHR</title></head>"
                            "<body><h1>Refloop demo EHR</h1><p>A SMART on FHIR launch server "
                            f"for the demo; FHIR base {_attr(self.fhir)}.</p>{link}</body></html>",
                            mimetype="text/html")

        @app.get("/ehr")
        def ehr_page() -> Any:
            src = request.args.get("app", "")
            width = int(request.args.get("width", "1100"))
            return Response(
                "<!doctype html><html><head><title>EHR</title></head><body>"
                "<h1 id='ehr'>Strict EHR chart</h1>"
                f"<iframe id='app' title='Refloop' src='{_attr(src)}' width='{width}' "
                "height='900' sandbox='allow-forms allow-same-origin allow-scripts'></iframe>"
                "</body></html>", mimetype="text/html")

        return app

    def _configuration(self) -> dict[str, Any]:
        return {
            "issuer": self.base, "jwks_uri": self.base + "/jwks",
            "authorization_endpoint": self.base + "/auth/authorize",
            "token_endpoint": self.base + "/auth/token",
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "scopes_supported": ["openid", "fhirUser", "launch", "online_access"],
            "response_types_supported": ["code"],
            "capabilities": ["launch-ehr", "launch-standalone", "client-confidential-symmetric",
                             "client-confidential-asymmetric", "sso-openid-connect",
                             "context-banner", "context-ehr-patient", "permission-user",
                             "permission-v2", "authorize-post"],
            "code_challenge_methods_supported": ["S256"],
        }

    def _capability_statement(self) -> dict[str, Any]:
        return {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
                "fhirVersion": "4.0.1", "format": ["json"], "rest": [{"mode": "server",
                "security": {"extension": [{
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [{"url": "authorize", "valueUri": self.base + "/auth/authorize"},
                                  {"url": "token", "valueUri": self.base + "/auth/token"}]}]}}]}

    def _strict_problem(self, params: Any) -> str:
        if len(params.get("state", "")) < 22:
            return "state is required (at least 122 bits)"
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            return "PKCE with code_challenge_method=S256 is required"
        if params.get("aud") != self.fhir:
            return "Bad audience value"
        scopes = params.get("scope", "").split()
        if "launch" in scopes and params.get("launch") not in self.launches:
            return "unknown launch"
        if "openid" in scopes and not params.get("nonce"):
            return "nonce is required with openid"
        return ""

    def _user_for(self, params: Any) -> dict[str, Any]:
        if params.get("launch"):
            return dict(self.launches[params["launch"]])
        return {"user": self.standalone_user, "patient": "", "encounter": ""}

    def _generate_token(self, grant_type: str, client: Client, user: Any = None,
                        scope: str | None = None, expires_in: int | None = None,
                        include_refresh_token: bool = True) -> dict[str, Any]:
        granted = " ".join(s for s in (scope or "").split() if s not in self.modes.drop_scopes)
        token: dict[str, Any] = {"token_type": "Bearer",
                                 "access_token": secrets.token_urlsafe(24),
                                 "expires_in": self.modes.expires_in, "scope": granted}
        if include_refresh_token and "online_access" in (scope or "").split():
            token["refresh_token"] = secrets.token_urlsafe(24)
        return token

    def _save_token(self, token: dict[str, Any], req: Any) -> None:
        context = req.user if isinstance(req.user, dict) else {}
        refresh = token.get("refresh_token", "")
        if not refresh and req.payload.grant_type == "refresh_token":
            refresh = req.form.get("refresh_token", "")
        self.tokens[token["access_token"]] = Token(
            token["access_token"], refresh, req.client.client_id, token.get("scope", ""),
            context.get("user", ""), context, time.time(), int(token["expires_in"]))
        if req.payload.grant_type == "authorization_code":
            if context.get("patient"):
                token["patient"] = context["patient"]
            if context.get("encounter"):
                token["encounter"] = context["encounter"]
            token["need_patient_banner"] = self.modes.need_patient_banner
            if self.modes.fhir_context:
                token["fhirContext"] = self.modes.fhir_context


def _attr(value: str) -> str:
    return value.replace("&", "&amp;").replace("'", "&#39;").replace("<", "&lt;")
