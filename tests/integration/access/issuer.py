"""A tenant's own authorization server, as far as Refloop sees it: a JWK Set URL, JWT access
tokens signed with its key, and an RFC 7662 introspection endpoint. A STAND-IN: the EHR's real
authorization server (Epic, Oracle Health, Keycloak...) cannot run here, so this one serves what
they publish, on 127.0.0.1, from a werkzeug server in a thread."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

ISSUER_PATH = "/oauth2"


class TenantIssuer:
    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "ehr-1"}, private=True)
        self.other_key = RSAKey.generate_key(2048, parameters={"kid": "ehr-1"}, private=True)
        #: opaque token -> introspection answer (active tokens only)
        self.opaque: dict[str, dict[str, Any]] = {}
        self.introspections = 0
        self.basic = ("refloop", "introspection-secret")
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.base = f"http://127.0.0.1:{self._server.server_port}"
        self.issuer = self.base + ISSUER_PATH
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> TenantIssuer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()

    def tenant(self, name: str, sources: list[str], *, introspection: bool = False
               ) -> dict[str, Any]:
        """The [[access.tenants]] entry for this server."""
        entry: dict[str, Any] = {"name": name, "sources": sources, "issuer": self.issuer,
                                 "jwks_uri": self.base + "/jwks"}
        if introspection:
            entry |= {"introspection_url": self.base + "/introspect",
                      "introspection_client_id": self.basic[0],
                      "introspection_client_secret": self.basic[1]}
        return entry

    def jwt(self, audience: str, scope: str, *, patient: str = "", lifetime: int = 300,
            key: RSAKey | None = None, alg: str = "RS256", **extra: Any) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": "user-7", "aud": audience, "iat": now,
                  "exp": now + lifetime, "jti": uuid.uuid4().hex, "client_id": "ehr-app",
                  "scope": scope, "fhirUser": "Practitioner/pr-7", **extra}
        if patient:
            claims["patient"] = patient
        return jwt.encode({"alg": alg, "kid": "ehr-1", "typ": "at+jwt"}, claims,
                          key or self.key, algorithms=[alg])

    def issue_opaque(self, scope: str, *, patient: str = "", active: bool = True) -> str:
        token = uuid.uuid4().hex
        answer: dict[str, Any] = {"active": active, "scope": scope, "client_id": "ehr-app",
                                  "exp": int(time.time()) + 300, "iss": self.issuer,
                                  "sub": "user-8", "fhirUser": "Practitioner/pr-8"}
        if patient:
            answer["patient"] = patient
        self.opaque[token] = answer
        return token

    @Request.application  # type: ignore[misc]
    def _app(self, request: Request) -> Response:
        if request.path == "/jwks":
            body = {"keys": [self.key.as_dict(private=False)]}
            return Response(json.dumps(body), mimetype="application/json")
        if request.path == "/introspect" and request.method == "POST":
            self.introspections += 1
            expected = "Basic " + base64.b64encode(":".join(self.basic).encode()).decode()
            if request.headers.get("Authorization") != expected:
                return Response('{"error":"invalid_client"}', status=401,
                                mimetype="application/json")
            answer = self.opaque.get(request.form.get("token", ""), {"active": False})
            return Response(json.dumps(answer), mimetype="application/json")
        return Response("not found", status=404)
