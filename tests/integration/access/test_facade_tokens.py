"""The authenticated FHIR facade on both databases: tokens from Refloop's own authorization
server (SMART Backend Services, private_key_jwt) and from a tenant's authorization server (JWT
against its JWK Set, or RFC 7662 introspection); SMART v2 scopes per type and interaction;
user/ scopes limited to the tenant, patient/ scopes to the patient; 401 with WWW-Authenticate,
403 OperationOutcome; AuditEvents; no-store; discovery."""

from __future__ import annotations

import base64
import json
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from flask import Blueprint, Flask
from flask.testing import FlaskClient
from joserfc.jwk import ECKey, RSAKey

from access.client import ASSERTION_TYPE
from access.tables import tokens as token_table
from referrals.model import Command, Referral, new_referral_id
from referrals.store.schema import resources
from refloop.app import create_app
from refloop.services import Services, build_services
from refloop.settings import Settings
from refloop.wiring.access import access_of, guard

sys.path.insert(0, str(Path(__file__).resolve().parent))

from issuer import TenantIssuer

BASE = "https://refloop.test"
FHIR_BASE = BASE + "/fhir"
TOKEN_URL = BASE + "/auth/token"


@dataclass
class World:
    services: Services
    client: FlaskClient
    #: referral ids: general tenant (source "t"), patient p0/p1/p2 by i % 3; north (source "n")
    general: list[str]
    north: list[str]


@pytest.fixture(scope="module")
def issuer() -> Iterator[TenantIssuer]:
    server = TenantIssuer().start()
    yield server
    server.stop()


@pytest.fixture
def world(database_url: str, tmp_path: Path, issuer: TenantIssuer) -> Iterator[World]:
    settings = Settings(var_dir=tmp_path / "var", database_url=database_url,
                        public_base_url=BASE, sections={"access": {"tenants": [
                            issuer.tenant("general", ["t"], introspection=True),
                            {"name": "north", "sources": ["n"]}]}})
    services = build_services(settings)
    general = [_open(services, f"t|{i}", f"Patient/p{i % 3}") for i in range(6)]
    north = [_open(services, f"n|{i}", f"Patient/p{i % 3}") for i in range(2)]
    yield World(services, create_app(services).test_client(), general, north)
    services.close()


def _open(services: Services, key: str, patient: str) -> str:
    referral, _ = services.referrals.open(Referral(
        id=new_referral_id(), source_key=key, service_request=f"ServiceRequest/{key}",
        patient=patient), Command("detect"))
    return referral.id


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assertion(client_id: str, key: Any, *, alg: str = "ES384", kid: str = "tests-es384",
              aud: str = TOKEN_URL, **claims: Any) -> str:
    from joserfc import jwt

    now = int(time.time())
    body = {"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + 240,
            "jti": uuid.uuid4().hex, **claims}
    return jwt.encode({"alg": alg, "kid": kid, "typ": "JWT"}, body, key, algorithms=[alg])


def token_request(client: FlaskClient, client_assertion: str, scope: str = "system/Task.rs"
                  ) -> Any:
    return client.post("/auth/token", data={
        "grant_type": "client_credentials", "scope": scope,
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": client_assertion})


def refused(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/fhir+json"
    assert response.headers["Cache-Control"] == "no-store"
    outcome = response.get_json()
    OperationOutcome.model_validate(outcome)
    assert outcome["issue"][0]["code"] == ("login" if status == 401 else "forbidden")
    return outcome


def challenge(response: Any) -> str:
    value = str(response.headers.get("WWW-Authenticate", ""))
    assert value.startswith('Bearer realm="refloop"'), value
    return value


def audit_events(services: Services) -> list[dict[str, Any]]:
    with services.db.read() as c:
        events = list(c.execute(sa.select(resources.c.body).where(
            resources.c.resource_type == "AuditEvent", resources.c.server == "local")).scalars())
    for event in events:
        AuditEvent.model_validate(event)
    return events


# -- the defect: patient data to anyone -------------------------------------------------------

def test_no_token_or_a_garbage_token_is_refused(world: World) -> None:
    response = world.client.get("/fhir/Task?_count=1")
    refused(response, 401)
    assert "error=" not in challenge(response)  # RFC 6750 3.1: no error code without a token
    assert "Patient/" not in response.get_data(as_text=True)
    garbage = world.client.get("/fhir/Task?_count=1", headers=bearer("garbage"))
    refused(garbage, 401)
    assert 'error="invalid_token"' in challenge(garbage)
    for path in (f"/fhir/Task/{world.general[0]}", "/fhir/Patient/1"):
        refused(world.client.get(path), 401)
    basic = world.client.get("/fhir/Task", headers={"Authorization": "Basic dXNlcjpwdw=="})
    refused(basic, 401)
    assert 'error="invalid_request"' in challenge(basic)
    assert world.client.get("/healthz").status_code == 200  # health stays open
    assert world.client.get("/fhir/metadata").status_code == 200  # so does the statement


# -- Refloop's own authorization server -------------------------------------------------------

def test_a_registered_client_gets_a_token_and_reads(world: World, fhir_auth: Any) -> None:
    client_id = fhir_auth.client_id(world.services, "system/Task.rs")
    response = token_request(world.client, assertion(client_id, fhir_auth.key),
                             "system/Task.rs system/Patient.rs")
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    token = response.get_json()
    assert token["token_type"].lower() == "bearer" and token["expires_in"] == 300
    assert token["scope"] == "system/Task.rs"  # Patient.rs was never registered
    with world.services.db.read() as c:  # only the hash is stored
        stored = c.execute(sa.select(token_table.c.token_hash)).scalars().all()
    assert token["access_token"] not in stored and len(stored) == 1
    found = world.client.get("/fhir/Task", headers=bearer(token["access_token"]))
    assert found.status_code == 200 and found.get_json()["total"] == 8
    assert found.headers["Cache-Control"] == "no-store"
    read = world.client.get(f"/fhir/Task/{world.general[1]}",
                            headers=bearer(token["access_token"]))
    assert read.status_code == 200 and read.headers["Cache-Control"] == "no-store"
    assert read.get_json()["for"]["reference"] == "Patient/p1"


def test_the_token_endpoint_works_whatever_the_host_header(world: World,
                                                          fhir_auth: Any) -> None:
    """authlib checks the request URI for https: the URI is the configured token URL, so a
    plain-http hop behind a TLS proxy, or any Host header, is not a 500."""
    client_id = fhir_auth.client_id(world.services, "system/Task.rs")
    for host in ("http://refloop.internal", "http://evil.example:8080"):
        response = world.client.post("/auth/token", base_url=host, data={
            "grant_type": "client_credentials", "scope": "system/Task.rs",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(client_id, fhir_auth.key)})
        assert response.status_code == 200, response.get_data(as_text=True)


def test_the_token_endpoint_refuses_bad_assertions(world: World, fhir_auth: Any) -> None:
    client_id = fhir_auth.client_id(world.services, "system/Task.rs")
    stranger = ECKey.generate_key("P-384", parameters={"kid": "tests-es384"}, private=True)
    now = int(time.time())
    cases = {
        "wrong signature": assertion(client_id, stranger),
        "wrong audience": assertion(client_id, fhir_auth.key, aud="https://evil.example/token"),
        "expired": assertion(client_id, fhir_auth.key, exp=now - 300, iat=now - 600),
        "exp too far ahead": assertion(client_id, fhir_auth.key, exp=now + 3600),
        "unknown kid": assertion(client_id, fhir_auth.key, kid="other"),
        "unknown client": assertion("nobody", fhir_auth.key),
        "iss is not sub": assertion(client_id, fhir_auth.key, iss="someone-else"),
        "HS256 with the public key": _hs256(client_id, fhir_auth.key),
        "no signature": _unsigned(client_id),
    }
    for why, signed in cases.items():
        response = token_request(world.client, signed)
        assert response.status_code in (400, 401), (why, response.status_code)
        assert (why, response.get_json()["error"]) == (why, "invalid_client")
    once = assertion(client_id, fhir_auth.key)
    assert token_request(world.client, once).status_code == 200
    replay = token_request(world.client, once)
    assert replay.get_json()["error"] == "invalid_client"  # jti already used
    for scope, says in (("system/Patient.rs", "none of the requested"), ("", "is required"),
                        ("user/Task.rs", "none of the requested")):
        answer = token_request(world.client, assertion(client_id, fhir_auth.key), scope)
        assert (scope, answer.get_json()["error"]) == (scope, "invalid_scope")
        description = answer.get_json()["error_description"]  # what to ask for instead
        assert says in description and description.endswith(": system/Task.rs"), description
    wrong_grant = world.client.post("/auth/token", data={"grant_type": "password"})
    assert wrong_grant.get_json()["error"] == "unsupported_grant_type"
    with world.services.db.read() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(token_table)).scalar() == 1
    # a client_id beside the assertion must name the same client (RFC 7521 4.2)
    for named, error in (("other", "invalid_client"), (client_id, None)):
        answer = world.client.post("/auth/token", data={
            "grant_type": "client_credentials", "scope": "system/Task.rs",
            "client_assertion_type": ASSERTION_TYPE, "client_id": named,
            "client_assertion": assertion(client_id, fhir_auth.key)})
        assert answer.get_json().get("error") == error, (named, answer.get_data(as_text=True))


def test_token_parameters_come_once_and_from_the_form_body(world: World, fhir_auth: Any
                                                           ) -> None:
    """RFC 6749 3.2: each parameter once, in the form body. A scope in the query string took
    the place of the form's (the query won, and the assertion was read from the form), and a
    repeated scope or assertion was read as its first value; both are invalid_request now,
    and no token is issued."""
    client_id = fhir_auth.client_id(world.services, "system/Task.rs system/Patient.rs")
    form = {"grant_type": "client_credentials", "scope": "system/Task.rs",
            "client_assertion_type": ASSERTION_TYPE}
    queried = world.client.post("/auth/token?scope=system/Patient.rs", data={
        **form, "client_assertion": assertion(client_id, fhir_auth.key)})
    assert queried.status_code == 400, queried.get_data(as_text=True)
    assert queried.get_json()["error"] == "invalid_request"
    assert "query" in queried.get_json()["error_description"]
    for name in ("scope", "grant_type", "client_assertion"):
        body = [(k, v) for k, v in form.items()] + [
            ("client_assertion", assertion(client_id, fhir_auth.key))]
        body.append(next((k, v) for k, v in body if k == name))
        answer = world.client.post("/auth/token", data=urlencode(body),
                                   content_type="application/x-www-form-urlencoded")
        assert answer.status_code == 400, (name, answer.get_data(as_text=True))
        assert answer.get_json()["error"] == "invalid_request"
        assert name in answer.get_json()["error_description"]
    with world.services.db.read() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(token_table)).scalar() == 0
    once = token_request(world.client, assertion(client_id, fhir_auth.key))
    assert once.get_json()["scope"] == "system/Task.rs"


def _hs256(client_id: str, key: ECKey) -> str:
    header = _b64({"alg": "HS256", "kid": "tests-es384", "typ": "JWT"})
    now = int(time.time())
    body = _b64({"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "exp": now + 200,
                 "jti": uuid.uuid4().hex})
    import hashlib
    import hmac

    secret = json.dumps(key.as_dict(private=False)).encode()
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{base64.urlsafe_b64encode(signature).decode().rstrip('=')}"


def _unsigned(client_id: str) -> str:
    claims = {"iss": client_id, "sub": client_id, "aud": TOKEN_URL,
              "exp": int(time.time()) + 200, "jti": "x"}
    return f"{_b64({'alg': 'none', 'kid': 'tests-es384'})}.{_b64(claims)}."


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_an_expired_or_revoked_token_is_refused(world: World, fhir_auth: Any) -> None:
    headers = fhir_auth.headers(world.client, world.services, "system/Task.rs")
    assert world.client.get("/fhir/Task", headers=headers).status_code == 200
    with world.services.db.write() as c:
        c.execute(token_table.update().values(
            expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    expired = world.client.get("/fhir/Task", headers=headers)
    assert 'error="invalid_token"' in challenge(expired) and expired.status_code == 401
    fresh = fhir_auth.headers(world.client, world.services, "system/Task.rs")
    assert world.client.get("/fhir/Task", headers=fresh).status_code == 200
    registry = access_of(world.services).clients
    assert registry.remove(fhir_auth.client_id(world.services, "system/Task.rs"))
    refused(world.client.get("/fhir/Task", headers=fresh), 401)


def test_scopes_are_checked_per_type_and_interaction(world: World, fhir_auth: Any) -> None:
    task = f"/fhir/Task/{world.general[0]}"
    cases = [  # (registered scope, path, status)
        ("system/Patient.rs", "/fhir/Task", 403),
        ("system/Patient.rs", task, 403),
        ("system/Task.s", task, 403),
        ("system/Task.s", "/fhir/Task", 200),
        ("system/Task.r", "/fhir/Task", 403),
        ("system/Task.r", task, 200),
        ("system/Task.read", task, 200),
        ("system/*.rs", task, 200),
        ("system/Task.cud", task, 403),
        ("metrics:read", "/fhir/Task", 403),
    ]
    for scope, path, status in cases:
        headers = fhir_auth.headers(world.client, world.services, scope)
        response = world.client.get(path, headers=headers)
        assert (scope, path, response.status_code) == (scope, path, status)
        if status == 403:
            refused(response, 403)
            assert 'error="insufficient_scope"' in challenge(response)
            assert 'scope="system/Task.' in challenge(response)


def test_a_client_of_a_tenant_reads_only_its_referrals(world: World, fhir_auth: Any) -> None:
    headers = fhir_auth.headers(world.client, world.services, "system/Task.rs", tenant="north")
    found = world.client.get("/fhir/Task", headers=headers).get_json()
    assert sorted(e["resource"]["id"] for e in found["entry"]) == sorted(world.north)
    assert world.client.get(f"/fhir/Task/{world.north[0]}", headers=headers).status_code == 200
    refused(world.client.get(f"/fhir/Task/{world.general[0]}", headers=headers), 403)


# -- a tenant's authorization server ----------------------------------------------------------

def test_jwt_access_tokens_of_a_tenant(world: World, issuer: TenantIssuer) -> None:
    user = issuer.jwt(FHIR_BASE, "user/Task.rs")
    found = world.client.get("/fhir/Task", headers=bearer(user))
    assert found.status_code == 200, found.get_json()
    assert sorted(e["resource"]["id"] for e in found.get_json()["entry"]) == \
        sorted(world.general)  # user/ scope: the tenant's referrals, not north's
    refused(world.client.get(f"/fhir/Task/{world.north[0]}", headers=bearer(user)), 403)
    patient = issuer.jwt(FHIR_BASE, "patient/Task.rs", patient="p1")
    mine = world.client.get("/fhir/Task", headers=bearer(patient)).get_json()
    assert {e["resource"]["for"]["reference"] for e in mine["entry"]} == {"Patient/p1"}
    assert mine["total"] == 2
    other = world.client.get("/fhir/Task?patient=Patient/p0", headers=bearer(patient))
    assert other.status_code == 200 and other.get_json()["total"] == 0
    refused(world.client.get(f"/fhir/Task/{world.general[0]}", headers=bearer(patient)), 403)
    assert world.client.get(f"/fhir/Task/{world.general[1]}",
                            headers=bearer(patient)).status_code == 200
    no_patient = issuer.jwt(FHIR_BASE, "patient/Task.rs")
    outcome = refused(world.client.get("/fhir/Task", headers=bearer(no_patient)), 403)
    assert "patient in context" in outcome["issue"][0]["diagnostics"]


def test_bad_tenant_jwts_are_refused(world: World, issuer: TenantIssuer) -> None:
    cases = {
        "expired": issuer.jwt(FHIR_BASE, "user/Task.rs", lifetime=-120),
        "wrong audience": issuer.jwt("https://other.example/fhir", "user/Task.rs"),
        "wrong signature": issuer.jwt(FHIR_BASE, "user/Task.rs", key=issuer.other_key),
        "no audience": issuer.jwt(FHIR_BASE, "user/Task.rs", aud=None),
    }
    for why, token in cases.items():
        response = world.client.get("/fhir/Task", headers=bearer(token))
        assert (why, response.status_code) == (why, 401)
        assert 'error="invalid_token"' in challenge(response), why
    assert "expired" in challenge(world.client.get(
        "/fhir/Task", headers=bearer(cases["expired"])))
    assert "aud" in challenge(world.client.get(
        "/fhir/Task", headers=bearer(cases["wrong audience"])))
    missing = world.client.get("/fhir/Task",
                               headers=bearer(issuer.jwt(FHIR_BASE, "user/Patient.rs")))
    refused(missing, 403)


def test_opaque_tenant_tokens_by_introspection(world: World, issuer: TenantIssuer) -> None:
    token = issuer.issue_opaque("user/Task.rs")
    before = issuer.introspections
    found = world.client.get("/fhir/Task", headers=bearer(token))
    assert found.status_code == 200 and found.get_json()["total"] == len(world.general)
    assert world.client.get("/fhir/Task", headers=bearer(token)).status_code == 200
    assert issuer.introspections == before + 1  # the answer is reused for a short while
    patient = issuer.issue_opaque("patient/Task.rs", patient="Patient/p2")
    mine = world.client.get("/fhir/Task", headers=bearer(patient)).get_json()
    assert {e["resource"]["for"]["reference"] for e in mine["entry"]} == {"Patient/p2"}
    inactive = issuer.issue_opaque("user/Task.rs", active=False)
    assert 'error="invalid_token"' in challenge(world.client.get(
        "/fhir/Task", headers=bearer(inactive)))
    refused(world.client.get("/fhir/Task", headers=bearer(uuid.uuid4().hex)), 401)


# -- audit, discovery, the reusable guard ---------------------------------------------------------

def test_each_read_of_patient_data_writes_an_audit_event(world: World, fhir_auth: Any,
                                                         issuer: TenantIssuer) -> None:
    headers = fhir_auth.headers(world.client, world.services, "system/Task.rs")
    client_id = fhir_auth.client_id(world.services, "system/Task.rs")
    world.client.get(f"/fhir/Task/{world.general[2]}", headers=headers)
    world.client.get("/fhir/Task?patient=p1", headers=headers)
    patient = issuer.jwt(FHIR_BASE, "patient/Task.rs", patient="p1")
    world.client.get(f"/fhir/Task/{world.general[0]}", headers=bearer(patient))  # refused
    world.client.get("/fhir/Task")  # no token: nothing is written for it
    events = audit_events(world.services)
    assert len(events) == 3
    by_kind = {(e["subtype"][0]["code"], e["outcome"]): e for e in events}
    read = by_kind[("read", "0")]
    assert read["agent"][0]["who"]["identifier"]["value"] == client_id
    assert {"reference": "Patient/p2"} in [x.get("what") for x in read["entity"]]
    assert {"reference": f"Task/{world.general[2]}"} in [x.get("what") for x in read["entity"]]
    search = by_kind[("search-type", "0")]
    assert {x["what"]["reference"] for x in search["entity"] if "what" in x
            and x["what"]["reference"].startswith("Patient/")} == {"Patient/p1"}
    query = next(x["query"] for x in search["entity"] if "query" in x)
    assert base64.b64decode(query).decode() == "Task?patient=p1"
    denied = by_kind[("read", "4")]
    assert {"reference": "Practitioner/pr-7"} in [a["who"] for a in denied["agent"]]
    assert "Bearer" not in json.dumps(events)


def test_discovery_and_capability_statement_describe_the_security(world: World) -> None:
    config = world.client.get("/.well-known/smart-configuration")
    assert config.status_code == 200 and config.mimetype == "application/json"
    body = config.get_json()
    assert world.client.get("/fhir/.well-known/smart-configuration").get_json() == body
    assert body["token_endpoint"] == TOKEN_URL
    assert body["grant_types_supported"] == ["client_credentials"]
    assert body["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert set(body["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}
    assert {"system/Task.rs", "user/Task.rs", "patient/Task.rs"} <= set(body["scopes_supported"])
    assert "permission-v2" in body["capabilities"]
    statement = world.client.get("/fhir/metadata").get_json()
    CapabilityStatement.model_validate(statement)
    security = statement["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    [uris] = security["extension"]
    assert {"url": "token", "valueUri": TOKEN_URL} in uris["extension"]
    assert "Cache-Control" not in world.client.get("/fhir/metadata").headers


def test_the_guard_protects_any_route(world: World, fhir_auth: Any) -> None:
    app = Flask("guarded")
    app.register_blueprint(create_app(world.services).blueprints["access"])
    bp = Blueprint("ops", __name__)

    @bp.get("/metrics")
    def metrics() -> str:
        return "refloop_up 1\n"

    guard(world.services).protect(bp, "metrics:read")
    app.register_blueprint(bp)

    @app.get("/task-count")
    @guard(world.services).require("system/Task.s")
    def task_count() -> str:
        return "8"

    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert 'realm="refloop"' in client.get("/metrics").headers["WWW-Authenticate"]
    tasks = fhir_auth.headers(client, world.services, "system/Task.rs")
    assert client.get("/metrics", headers=tasks).status_code == 403
    assert client.get("/task-count", headers=tasks).get_data(as_text=True) == "8"
    metrics_token = fhir_auth.headers(client, world.services, "metrics:read")
    answer = client.get("/metrics", headers=metrics_token)
    assert answer.status_code == 200 and answer.get_data(as_text=True) == "refloop_up 1\n"
    assert client.get("/task-count", headers=metrics_token).status_code == 403


def test_a_client_with_a_jwks_url(world: World, issuer: TenantIssuer) -> None:
    """The tenant issuer's /jwks doubles as a client's JWK Set URL (RS384 with its key)."""
    registry = access_of(world.services).clients
    client = registry.add(name="jwks-url client", scopes=["system/Task.rs"],
                          jwks_url=issuer.base + "/jwks")
    signed = assertion(client.client_id, issuer.key, alg="RS384", kid="ehr-1")
    response = token_request(world.client, signed)
    assert response.status_code == 200, response.get_json()
    assert world.client.get("/fhir/Task", headers=bearer(
        response.get_json()["access_token"])).status_code == 200
    wrong = assertion(client.client_id, RSAKey.generate_key(2048, private=True), alg="RS384",
                      kid="ehr-1")
    assert token_request(world.client, wrong).get_json()["error"] == "invalid_client"


def test_deployment_wide_figures_need_a_token_without_limits(world: World, fhir_auth: Any,
                                                             issuer: TenantIssuer) -> None:
    """/metrics sums every tenant's work: a token limited to a tenant or a patient is refused,
    whoever issued it; the MeasureReport, which can be limited, gives a tenant its own."""
    client = world.client
    whole = fhir_auth.headers(client, world.services, "metrics:read")
    assert client.get("/metrics", headers=whole).status_code == 200
    north = fhir_auth.headers(client, world.services, "metrics:read", tenant="north")
    said = refused(client.get("/metrics", headers=north), 403)["issue"][0]["diagnostics"]
    assert "tenant 'north'" in said and "whole deployment" in said
    user = bearer(issuer.jwt(FHIR_BASE, "metrics:read"))
    assert "tenant 'general'" in refused(client.get("/metrics", headers=user), 403)[
        "issue"][0]["diagnostics"]
    patient = bearer(issuer.jwt(FHIR_BASE, "metrics:read", patient="p1"))
    assert "one patient" in refused(client.get("/metrics", headers=patient), 403)[
        "issue"][0]["diagnostics"]

    def referrals_counted(headers: dict[str, str]) -> int:
        answer = client.get("/fhir/MeasureReport", headers=headers)
        assert answer.status_code == 200, answer.get_json()
        this_month = answer.get_json()["entry"][-1]["resource"]
        [completion] = [g for g in this_month["group"] if g["id"] == "completion"]
        return int(completion["population"][0]["count"])

    assert referrals_counted(fhir_auth.headers(client, world.services,
                                               "system/MeasureReport.rs")) == 8
    assert referrals_counted(fhir_auth.headers(client, world.services, "system/MeasureReport.rs",
                                               tenant="north")) == 2
    assert referrals_counted(bearer(issuer.jwt(FHIR_BASE, "user/MeasureReport.rs"))) == 6
    one = bearer(issuer.jwt(FHIR_BASE, "patient/MeasureReport.rs", patient="p1"))
    assert "one patient" in refused(client.get("/fhir/MeasureReport", headers=one), 403)[
        "issue"][0]["diagnostics"]
