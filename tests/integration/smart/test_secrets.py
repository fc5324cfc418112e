"""Tokens (access, refresh, id_token), the client secret and client assertions never appear in
logs, cookies, HTML or URLs: a full session is run and everything it produced is scanned."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from smart_harness import CLIENT_ID, SCOPES, Harness, Served, browser_session, smart_settings

from referrals.model import Command, Referral, new_referral_id
from refloop.app import create_app
from refloop.logs import JsonFormatter
from refloop.services import build_services
from smart_app.tables import sessions

#: loggers of the strict EHR (the test peer's authorization server), not of our app; every
#: other record, at every level including DEBUG from authlib's and urllib3's client side, is
#: scanned
PEER_LOGGERS = ("authlib.oauth2.rfc6749.grants", "authlib.oauth2.rfc6749.authenticate_client",
                "authlib.oauth2.rfc6749.authorization_server", "authlib.oauth2.rfc7523.client",
                "authlib.oidc", "authlib.integrations.flask_oauth2", "strict_ehr")


def _ours(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if not r.name.startswith(PEER_LOGGERS)]


def _secrets(ehr) -> list[str]:
    found = []
    for response in ehr.token_responses:
        found += [str(response[k]) for k in ("access_token", "refresh_token", "id_token")
                  if response.get(k)]
    return found


def _scan(h: Harness, secrets: list[str], logs: list[logging.LogRecord]) -> None:
    formatter = JsonFormatter()
    logs = _ours(logs)
    lines = [formatter.format(r) for r in logs]
    assert lines, "nothing was logged: the scan would prove nothing"
    for secret in secrets:
        for record, line in zip(logs, lines, strict=True):
            assert secret not in line, f"a token reached the logs: {record.name}"
        for response in h.responses:
            assert secret not in response.text, f"a token reached a page: {response.url}"
            assert secret not in response.url
            for name, value in response.headers.items():
                assert secret not in value, f"a token reached header {name}"
            for cookie in response.cookies:
                assert secret not in str(cookie.value)


def test_no_token_in_logs_cookies_pages_or_urls(harness: Harness):
    draft = Referral(id=new_referral_id(), source_key="t|ServiceRequest/s1",
                     service_request="ServiceRequest/s1", patient="Patient/p1")
    referral, _ = harness.services.referrals.open(draft, Command("detect"))
    harness.ehr.modes.expires_in = 30  # force refreshes too
    browser = harness.browser()
    page = harness.launch(browser, patient="p1")
    browser.get(page.url)
    browser.get(f"{page.url}referrals/{referral.id}")
    browser.get(f"{page.url}dashboard")
    secrets = _secrets(harness.ehr)
    assert len(secrets) >= 5  # access + refresh + id_token, then refreshed access tokens
    _scan(harness, secrets, harness.logs)
    with harness.services.db.read() as c:
        stored = " ".join(c.execute(sa.select(sessions.c.tokens)).scalars())
    for secret in secrets:
        assert secret not in stored, "tokens must be encrypted at rest"


def test_client_secret_never_leaves_the_server_side(database_url, tmp_path, ehr, caplog):
    secret = "sup3r-s3cret-client-value"
    served = Served()
    services = build_services(smart_settings(database_url, tmp_path, ehr, tmp_path / "x.pem",
                                             served.url, private_key_file="", kid="",
                                             client_secret=secret))
    served.app = create_app(services)
    caplog.set_level(logging.DEBUG)
    for noisy in ("werkzeug", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        url = served.url
        ehr.register(CLIENT_ID, f"{url}/smart/callback", SCOPES, secret=secret)
        browser = browser_session()
        seen = []
        browser.hooks["response"].append(lambda r, *a, **k: seen.append(r))
        handle = ehr.new_launch(user="Practitioner/coord-1")
        page = browser.get(f"{url}/smart/launch", params={"iss": ehr.fhir, "launch": handle})
        assert page.status_code == 200
        formatter = JsonFormatter()
        assert _ours(caplog.records)
        for record in _ours(caplog.records):
            assert secret not in formatter.format(record)
        for response in seen:
            assert secret not in response.text and secret not in response.url
            assert all(secret not in v for v in response.headers.values())
    finally:
        served.stop()
        services.close()
