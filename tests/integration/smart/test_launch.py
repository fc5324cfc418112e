"""EHR launch and standalone launch against the strict EHR (strict_ehr.py: authlib's server
components, because no SMART EHR launch server can run here in CI), with the negative cases
that lenient launchers let through."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa
from smart_harness import CLIENT_ID, SCOPES, Harness, smart_settings

from refloop.app import create_app
from refloop.services import build_services
from smart_app.tables import sessions as sessions_table


def _authorize_location(h: Harness, browser, **kwargs) -> str:
    handle = h.ehr.new_launch(user="Practitioner/coord-1", patient=kwargs.pop("patient", ""))
    response = browser.get(f"{h.url}/smart/launch", params={"iss": h.ehr.fhir, "launch": handle},
                           allow_redirects=False)
    assert response.status_code == 302, response.text
    return response.headers["Location"]


def test_ehr_launch_lands_on_the_worklist_with_the_user_from_the_id_token(harness: Harness):
    browser = harness.browser()
    page = harness.launch(browser)
    assert page.status_code == 200, page.text
    assert "/smart/s/" in page.url and page.url.endswith("/")
    assert "Referral worklist" in page.text
    assert "Casey Coordinator" in page.text  # read from the EHR with the user's token
    assert "GET /fhir/Practitioner/coord-1" in harness.ehr.requests
    cookie = next(c for c in browser.cookies if c.name == "refloop_smart")
    assert cookie.secure and cookie.has_nonstandard_attr("HttpOnly")
    raw = next(r for r in harness.responses if "set-cookie" in r.headers)
    header = raw.headers["set-cookie"]
    for attribute in ("Secure", "HttpOnly", "SameSite=None", "Partitioned", "Path=/smart"):
        assert attribute in header
    assert f"frame-ancestors {harness.ehr.base}" in page.headers["Content-Security-Policy"]
    assert "X-Frame-Options" not in page.headers
    assert page.headers["Cache-Control"] == "no-store"


def test_authorize_request_carries_pkce_s256_state_nonce_aud_and_launch(harness: Harness):
    location = _authorize_location(harness, harness.browser())
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert location.startswith(harness.ehr.base + "/auth/authorize?")
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 43  # 256 bits, URL-safe
    assert query["aud"] == harness.ehr.fhir and query["launch"] in harness.ehr.launches
    assert query["nonce"] and "openid" in query["scope"].split()
    assert query["scope"] == SCOPES and query["client_id"] == CLIENT_ID


def test_private_key_jwt_assertion_is_fresh_for_each_token_request(harness: Harness):
    harness.launch(harness.browser())
    harness.launch(harness.browser())
    assert len(harness.ehr.seen_jti) == 2


def test_patient_context_banner_and_patient_scoped_worklist(harness: Harness):
    page = harness.launch(harness.browser(), patient="p1")
    assert page.status_code == 200
    assert "Referrals for this patient" in page.text
    assert "Ada Lovelace" in page.text
    assert "GET /fhir/Patient/p1" in harness.ehr.requests


def test_two_frames_keep_their_own_patient(harness: Harness):
    browser = harness.browser()
    first = harness.launch(browser, patient="p1")
    second = harness.launch(browser, patient="p2")
    assert first.url != second.url
    again_first = browser.get(first.url)
    again_second = browser.get(second.url)
    assert again_first.status_code == 200 and again_second.status_code == 200
    assert "Ada Lovelace" in again_first.text
    assert "Patient/p2" in again_second.text and "Ada Lovelace" not in again_second.text


def test_standalone_launch_without_launch_parameter(harness: Harness):
    browser = harness.browser()
    page = browser.get(f"{harness.url}/smart/launch", params={"iss": harness.ehr.fhir})
    assert page.status_code == 200, page.text
    assert "Referral worklist" in page.text
    authorize = next(r for r in harness.ehr.requests if r.startswith("GET /auth/authorize"))
    assert authorize


def test_capability_statement_fallback_for_old_servers(harness: Harness):
    harness.ehr.modes.well_known = False
    harness.ehr.app.config["unused"] = True
    browser = harness.browser()
    response = harness.launch(browser)
    # the fallback finds the endpoints, but without issuer/jwks the id_token cannot be trusted
    assert "GET /fhir/metadata" in harness.ehr.requests
    assert response.status_code == 400
    assert "cannot be verified" in response.text


def test_iss_outside_the_allow_list_is_refused_before_discovery(harness: Harness):
    before = len(harness.ehr.requests)
    response = harness.browser().get(f"{harness.url}/smart/launch",
                                     params={"iss": "http://127.0.0.1:1/evil/fhir",
                                             "launch": "x"})
    assert response.status_code == 400
    assert "not registered to launch Refloop" in response.text
    assert len(harness.ehr.requests) == before  # no discovery, nothing sent anywhere


def test_trailing_slash_on_iss_is_normalised_for_the_allow_list(harness: Harness):
    handle = harness.ehr.new_launch(user="Practitioner/coord-1")
    response = harness.browser().get(f"{harness.url}/smart/launch",
                                     params={"iss": harness.ehr.fhir + "/", "launch": handle},
                                     allow_redirects=False)
    assert response.status_code == 302
    assert parse_qs(urlsplit(response.headers["Location"]).query)["aud"] == \
        [harness.ehr.fhir + "/"]  # echoed unchanged


def test_wrong_aud_host_is_refused_by_the_strict_ehr_and_explained(harness: Harness):
    # localhost:<port>/fhir is in the allow-list and discovery works, but it is not the
    # EHR's exact base: a lenient launcher compares only port and path and lets it through.
    response = harness.launch(harness.browser(), iss=f"http://localhost:{harness.ehr.port}/fhir")
    assert response.status_code == 400
    assert "Bad audience value" in response.text


def test_a_refused_code_exchange_shows_the_ehrs_description_and_logs_the_cause(
        harness: Harness):
    harness.ehr.modes.token_error = ("invalid_client",
                                     "JWKS for <refloop-test> has no key refloop-1")
    response = harness.launch(harness.browser())
    assert response.status_code == 502
    assert "invalid_client (JWKS for &lt;refloop-test&gt; has no key refloop-1)" in response.text
    assert "<refloop-test>" not in response.text  # escaped
    assert "refloop smart client-config" in response.text
    warned = [r for r in harness.logs if r.levelname == "WARNING"
              and r.getMessage() == "launch failed: code exchange refused"]
    assert len(warned) == 1 and warned[0].tenant == "general"
    assert "has no key refloop-1" in warned[0].cause


def test_missing_state_on_callback_is_refused(harness: Harness):
    response = harness.browser().get(f"{harness.url}/smart/callback", params={"code": "abc"})
    assert response.status_code == 400
    assert "Relaunch from the EHR" in response.text


def test_reused_state_is_refused(harness: Harness):
    browser = harness.browser()
    location = _authorize_location(harness, browser)
    to_app = browser.get(location, allow_redirects=False)
    callback = to_app.headers["Location"]
    first = browser.get(callback)
    assert first.status_code == 200
    replay = browser.get(callback)
    assert replay.status_code == 400
    assert "already used" in replay.text


def test_state_from_another_browser_is_refused(harness: Harness):
    location = _authorize_location(harness, harness.browser())
    callback = harness.browser().get(location, allow_redirects=False).headers["Location"]
    stranger = harness.browser()
    response = stranger.get(callback)
    assert response.status_code == 400
    assert "another window" in response.text


def test_strict_ehr_refuses_requests_without_state_or_pkce_or_with_plain(harness: Harness):
    browser = harness.browser()
    location = _authorize_location(harness, browser)
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    authorize = harness.ehr.base + "/auth/authorize"
    cases = [
        {k: v for k, v in query.items() if k != "state"},
        {k: v for k, v in query.items() if k not in ("code_challenge", "code_challenge_method")},
        {**query, "code_challenge_method": "plain"},
    ]
    for params in cases:
        response = browser.get(authorize, params=params, allow_redirects=False)
        location = response.headers.get("Location", "")
        assert "code=" not in location, params
        assert "error=invalid_request" in location


def test_bad_id_token_signature_is_refused(harness: Harness):
    harness.ehr.modes.bad_id_token_signature = True
    response = harness.launch(harness.browser())
    assert response.status_code == 400
    assert "signature does not verify" in response.text
    with harness.services.db.read() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(sessions_table)).scalar() == 0


def test_expired_id_token_is_refused(harness: Harness):
    harness.ehr.modes.id_token_exp_offset = -600
    response = harness.launch(harness.browser())
    assert response.status_code == 400
    assert "id_token is not valid" in response.text


def test_narrower_granted_scope_is_adopted(harness: Harness):
    harness.ehr.modes.drop_scopes = {"user/Practitioner.rs", "user/Patient.rs"}
    page = harness.launch(harness.browser(), patient="p1")
    assert page.status_code == 200
    assert "did not grant read access to Practitioner" in page.text
    assert "did not grant read access to Patient" in page.text
    assert not any("/fhir/Practitioner" in r or "/fhir/Patient" in r
                   for r in harness.ehr.requests)
    with harness.services.db.read() as c:
        context = c.execute(sa.select(sessions_table.c.context)).scalar_one()
    assert "user/Practitioner.rs" not in context["scope"]
    assert "user/ServiceRequest.rs" in context["scope"]


def test_refresh_before_expiry_keeps_the_old_refresh_token_when_none_comes_back(
        harness: Harness):
    harness.ehr.modes.expires_in = 30  # inside the 60 s refresh-ahead window
    harness.ehr.modes.refresh_returns_new_token = False
    browser = harness.browser()
    page = harness.launch(browser)
    assert page.status_code == 200
    original = next(t.refresh_token for t in harness.ehr.tokens.values() if t.refresh_token)
    again = browser.get(page.url)
    assert again.status_code == 200 and "Referral worklist" in again.text
    third = browser.get(page.url)
    assert third.status_code == 200
    # each page load finds the 30 s token inside the refresh window: three refreshes, all
    # with the only refresh token the EHR ever issued
    assert harness.ehr.refreshes == [original, original, original]


def test_refresh_with_rotation_uses_the_new_refresh_token(harness: Harness):
    harness.ehr.modes.expires_in = 30
    browser = harness.browser()
    page = harness.launch(browser)
    browser.get(page.url)
    browser.get(page.url)
    assert len(harness.ehr.refreshes) == 3
    assert len(set(harness.ehr.refreshes)) == 3  # each refresh used the newest one


def test_failed_refresh_ends_the_session_with_a_relaunch_page(harness: Harness):
    harness.ehr.modes.expires_in = 30
    browser = harness.browser()
    page = harness.launch(browser)
    for token in harness.ehr.tokens.values():
        token.revoked = True
    response = browser.get(page.url)
    assert response.status_code == 401
    assert "Relaunch Refloop from the EHR" in response.text
    assert "password" not in response.text.lower()  # a relaunch page, not a login form


def test_idle_session_ends(harness: Harness):
    browser = harness.browser()
    page = harness.launch(browser)
    with harness.services.db.write() as c:
        c.execute(sessions_table.update().values(
            last_seen=datetime.now(UTC) - timedelta(minutes=16)))
    response = browser.get(page.url)
    assert response.status_code == 401 and "session has ended" in response.text


def test_session_needs_the_cookie_that_created_it(harness: Harness):
    page = harness.launch(harness.browser())
    response = harness.browser().get(page.url)
    assert response.status_code == 401


def test_client_secret_basic_when_no_key_is_configured(database_url, tmp_path, ehr):
    from smart_harness import Served, browser_session

    served = Served()
    settings = smart_settings(database_url, tmp_path, ehr, tmp_path / "unused.pem", served.url,
                              private_key_file="", kid="", client_secret="s3cret-value")
    services = build_services(settings)
    served.app = create_app(services)
    try:
        url = served.url
        ehr.register(CLIENT_ID, f"{url}/smart/callback", SCOPES, secret="s3cret-value")
        handle = ehr.new_launch(user="Practitioner/coord-1")
        page = browser_session().get(f"{url}/smart/launch",
                                     params={"iss": ehr.fhir, "launch": handle})
        assert page.status_code == 200, page.text
        assert "Referral worklist" in page.text
        assert not ehr.seen_jti
    finally:
        served.stop()
        services.close()


def test_long_scope_string_uses_a_post_form(database_url, tmp_path, ehr, app_key):
    long_scopes = SCOPES + " " + " ".join(f"user/Type{i}.rs" for i in range(200))
    from smart_harness import Served, browser_session

    served = Served()
    settings = smart_settings(database_url, tmp_path, ehr, app_key[0], served.url,
                              scopes=long_scopes)
    services = build_services(settings)
    served.app = create_app(services)
    try:
        url = served.url
        handle = ehr.new_launch(user="Practitioner/coord-1")
        page = browser_session().get(f"{url}/smart/launch",
                                     params={"iss": ehr.fhir, "launch": handle})
        assert page.status_code == 200
        assert f'action="{ehr.base}/auth/authorize"' in page.text
        assert 'method="post"' in page.text and 'name="code_challenge"' in page.text
        assert f"form-action 'self' {ehr.base}" in page.headers["Content-Security-Policy"]
    finally:
        served.stop()
        services.close()


def test_fhir_context_service_request_opens_its_referral(harness: Harness):
    from referrals.model import Command, Referral, new_referral_id

    draft = Referral(id=new_referral_id(), source_key="t|ServiceRequest/sr-9",
                     service_request="ServiceRequest/sr-9", patient="Patient/p1",
                     specialty="cardiology")
    referral, _ = harness.services.referrals.open(draft, Command("detect"))
    harness.ehr.modes.fhir_context = [{"reference": "ServiceRequest/sr-9"}]
    page = harness.launch(harness.browser())
    assert page.url.endswith(f"/referrals/{referral.id}")
    time.sleep(0)
