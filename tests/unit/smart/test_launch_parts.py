"""Pure parts of the SMART launch: configuration, iss normalisation, launch context, the
authorization request, id_token validation, discovery parsing, CSRF checks."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from joserfc import jwt
from joserfc.jwk import RSAKey

from smart_app.auth import LaunchError, build_authorize_request, validate_id_token
from smart_app.config import SmartConfigError, Tenant, from_section, normalise_iss
from smart_app.context import LaunchContext, from_token_response, parse_fhir_context
from smart_app.discovery import ServerMeta, _from_capability
from smart_app.security import csrf_problem

TENANT = {"name": "t", "iss": ["https://ehr.example/fhir/"], "client_id": "c",
          "ehr_origins": ["https://ehr.example"], "client_secret": "s"}
META = ServerMeta("https://ehr.example/auth", "https://ehr.example/token",
                  issuer="https://ehr.example", capabilities=("authorize-post",))


def test_tenant_allow_list_ignores_one_trailing_slash_only():
    config = from_section({"tenants": [TENANT]}, Path("var"))
    assert config.tenant_for_iss("https://ehr.example/fhir") is not None
    assert config.tenant_for_iss("https://ehr.example/fhir/") is not None
    assert config.tenant_for_iss("https://ehr.example/fhir//") is None
    assert config.tenant_for_iss("https://evil.example/fhir") is None
    assert normalise_iss("https://a/b/") == "https://a/b"


@pytest.mark.parametrize("change, message", [
    ({"client_id": ""}, "'client_id' is required"),
    ({"client_secret": ""}, "set private_key_file and kid"),
    ({"ehr_origins": ["https://ehr.example/path"]}, "must be an origin"),
    ({"private_key_file": "k.pem"}, "needs a 'kid'"),
])
def test_bad_tenant_configuration_says_what_to_fix(change, message):
    with pytest.raises(SmartConfigError, match=message):
        from_section({"tenants": [{**TENANT, **change}]}, Path("var"))


@pytest.mark.parametrize("value, expected", [
    (["ServiceRequest/1"], ("ServiceRequest/1",)),                       # 2.0 strings
    ([{"reference": "Task/2", "role": "x"}], ("Task/2",)),               # 2.1 objects
    ([{"canonical": "http://x/Q"}, {"reference": "Encounter/3"}], ("Encounter/3",)),  # 2.2
    ([{"reference": "https://other.example/Patient/9"}], ()),           # no other servers
    ("ServiceRequest/1", ()),
])
def test_fhir_context_in_all_three_shapes(value, expected):
    assert parse_fhir_context(value) == expected


def test_context_from_token_response_and_user_from_fhir_user():
    token = {"patient": "p1", "encounter": "e1", "need_patient_banner": False,
             "scope": "launch openid user/Patient.rs user/Task.read", "intent": "referral"}
    claims = {"fhirUser": "https://ehr.example/fhir/PractitionerRole/r1"}
    context = from_token_response(token, claims, "https://ehr.example/fhir")
    assert context.user == "PractitionerRole/r1"
    assert (context.patient, context.encounter) == ("Patient/p1", "Encounter/e1")
    assert context.need_patient_banner is False and context.intent == "referral"
    assert context.can_read("Patient") and context.can_read("Task")
    assert not context.can_read("Practitioner")
    assert LaunchContext.from_dict(context.to_dict()) == context


def test_patient_users_are_refused():
    with pytest.raises(LaunchError, match="clinicians and coordinators"):
        from_token_response({}, {"fhirUser": "Patient/1"}, "https://ehr.example/fhir")
    with pytest.raises(LaunchError, match="no fhirUser"):
        from_token_response({}, {}, "https://ehr.example/fhir")


def test_v1_write_scope_does_not_grant_read():
    context = LaunchContext(user="Practitioner/1", scope=("user/Patient.write",
                                                           "user/Coverage.cu"))
    assert not context.can_read("Patient") and not context.can_read("Coverage")


def _tenant() -> Tenant:
    return Tenant("t", ("https://ehr.example/fhir",), "c", ("https://ehr.example",),
                  client_secret="s")


def test_authorize_request_is_a_get_with_pkce_s256():
    request = build_authorize_request(META, _tenant(), iss="https://ehr.example/fhir",
                                      launch="L", scope="launch openid fhirUser", state="S" * 43,
                                      nonce="N", code_verifier="v" * 64,
                                      redirect_uri="https://app/cb")
    query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
    assert request.method == "GET"
    assert query["code_challenge_method"] == "S256"
    assert query["aud"] == "https://ehr.example/fhir" and query["launch"] == "L"
    assert query["nonce"] == "N" and query["state"] == "S" * 43


def test_long_scope_strings_are_posted_when_the_server_allows():
    scope = " ".join(f"user/T{i}.rs" for i in range(300))
    request = build_authorize_request(META, _tenant(), iss="https://ehr.example/fhir",
                                      launch=None, scope=scope, state="S", nonce="N",
                                      code_verifier="v" * 64, redirect_uri="https://app/cb")
    assert request.method == "POST" and request.url == META.authorization_endpoint
    assert request.form["scope"] == scope and request.form["code_challenge_method"] == "S256"
    assert "launch" not in request.form


KEY = RSAKey.generate_key(2048, parameters={"kid": "k"})


def _id_token(key: RSAKey = KEY, **claims) -> str:
    now = int(time.time())
    body = {"iss": "https://ehr.example", "aud": "c", "iat": now, "exp": now + 300,
            "nonce": "N", "fhirUser": "Practitioner/1", **claims}
    return jwt.encode({"alg": "RS256", "kid": "k"}, body, key)


JWKS = {"keys": [KEY.as_dict(private=False)]}


def test_valid_id_token():
    claims = validate_id_token(_id_token(), jwks=JWKS, issuer="https://ehr.example",
                               client_id="c", nonce="N")
    assert claims["fhirUser"] == "Practitioner/1"


@pytest.mark.parametrize("token, message", [
    (lambda: _id_token(RSAKey.generate_key(2048, parameters={"kid": "k"})), "signature"),
    (lambda: _id_token(exp=int(time.time()) - 120), "not valid"),
    (lambda: _id_token(aud="someone-else"), "not valid"),
    (lambda: _id_token(iss="https://evil.example"), "not valid"),
    (lambda: _id_token(nonce="other"), "nonce"),
])
def test_id_token_problems_are_refused(token, message):
    with pytest.raises(LaunchError, match=message):
        validate_id_token(token(), jwks=JWKS, issuer="https://ehr.example", client_id="c",
                          nonce="N")


def test_small_clock_skew_is_tolerated():
    token = _id_token(exp=int(time.time()) - 30)
    assert validate_id_token(token, jwks=JWKS, issuer="https://ehr.example", client_id="c",
                             nonce="N")


def test_capability_statement_oauth_uris_are_read_and_resolved():
    statement = {"rest": [{"security": {"extension": [{
        "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
        "extension": [{"url": "authorize", "valueUri": "auth/authorize"},
                      {"url": "token", "valueUri": "https://ehr.example/token"}]}]}}]}
    meta = _from_capability(statement, "https://ehr.example/fhir/")
    assert meta is not None and meta.source == "capability-statement"
    assert meta.authorization_endpoint == "https://ehr.example/fhir/auth/authorize"
    assert _from_capability({"rest": [{}]}, "https://ehr.example/fhir/") is None


@pytest.mark.parametrize("form, headers, refused", [
    ({"csrf_token": "T"}, {"Origin": "https://app.example"}, False),
    ({"csrf_token": "T"}, {"Referer": "https://app.example/smart/s/x"}, False),
    ({"csrf_token": "X"}, {"Origin": "https://app.example"}, True),
    ({}, {"Origin": "https://app.example"}, True),
    ({"csrf_token": "T"}, {"Origin": "https://evil.example"}, True),
    ({"csrf_token": "T"}, {}, True),
    ({"csrf_token": "T"}, {"Origin": "https://app.example", "Sec-Fetch-Site": "cross-site"},
     True),
])
def test_csrf_needs_the_token_and_our_origin(form, headers, refused):
    app = Flask("t")
    with app.test_request_context("/", method="POST", data=form, headers=headers):
        from flask import request

        problem = csrf_problem(request, expected_token="T", own_origin="https://app.example")
    assert (problem is not None) is refused


@pytest.mark.parametrize(("scope", "limited"), [
    ("patient/ServiceRequest.rs patient/Patient.rs user/Practitioner.rs", True),
    ("patient/*.rs user/Patient.rs user/Task.write", True),
    ("patient/ServiceRequest.rs", True),
    ("user/ServiceRequest.rs user/Practitioner.rs", False),
    ("patient/ServiceRequest.r user/ServiceRequest.s", False),
    ("user/Task.read", False),
    ("system/*.rs", False),
    ("user/Practitioner.rs user/Patient.rs", False),  # the EHR limited nothing to a patient
    ("patient/Patient.rs", True),
    ("openid fhirUser", True),
    ("patient/*.read user/*.*", False),
    ("patient/*.rs user/ServiceRequest.c", True),  # create only: no read of others' referrals
    # SMART's granular scopes grant nothing the app would widen: it does not evaluate them
    ("patient/*.rs user/ServiceRequest.rs?category=http://snomed.info/sct|3457005", True),
    ("patient/*.rs user/*.rs?_security=R", True),
    ("patient/*.rs user/ServiceRequest.sr", True),  # v2 permissions come in cruds order
    ("patient/*.rs USER/ServiceRequest.rs", True),
    ("PATIENT/ServiceRequest.rs user/Practitioner.rs", True),  # a malformed patient/ still limits
])
def test_only_a_user_level_grant_of_referrals_lifts_the_patient_limit(scope: str, limited: bool):
    """A user/ scope for another type (Practitioner, to show the user's name) leaves the
    referrals limited to the launch's patient, as the EHR granted them."""
    context = LaunchContext(user="Practitioner/1", patient="Patient/p1",
                            scope=("launch", "openid", *scope.split()))
    assert context.patient_limited is limited


@pytest.mark.parametrize(("scope", "limited"), [
    ("patient/*.rs user/Task.rs\u00a0x", True),  # a no-break space separates nothing
    ("patient/*.rs\nuser/Task.rs", False),
    ("  patient/*.rs\tuser/Practitioner.rs ", True),
])
def test_scope_tokens_are_separated_by_ascii_blanks_only(scope: str, limited: bool):
    context = from_token_response({"scope": f"launch openid {scope}", "patient": "p1"},
                                  {"fhirUser": "Practitioner/1"}, "https://ehr.example/fhir")
    assert context.patient_limited is limited


def test_a_granular_scope_still_lets_the_app_read_from_the_ehr():
    """The EHR restricts its own reads, so the user's name may be fetched under such a scope."""
    context = LaunchContext(user="Practitioner/1", scope=("user/Practitioner.rs?active=true",))
    assert context.can_read("Practitioner") and not context.can_read("Patient")
