"""The SMART app launched inside a cross-site iframe of a page that plays the EHR, in headless
Chromium with third-party cookies blocked.

The EHR page and the strict EHR's authorization server are served on http://127.0.0.1:<port>,
the app on http://localhost:<port>: two different sites, so the app is a cross-site frame just
as in an EHR. The app's session cookie is `Secure; HttpOnly; SameSite=None; Partitioned`;
Chromium accepts Secure cookies on http://localhost (a potentially trustworthy origin), so no
TLS is needed here, while 127.0.0.1 would not get the same treatment in the frame. The strict
EHR stands in for a real one (no SMART EHR launch server can run in CI; see
tests/integration/smart/strict_ehr.py).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration" / "smart"))

from strict_ehr import StrictEhr

from referrals.model import Command, Referral, Stage, new_referral_id
from refloop.app import create_app
from refloop.services import build_services
from refloop.settings import Settings

SCOPES = "launch openid fhirUser online_access user/Practitioner.rs user/Patient.rs"
SHOTS = Path(__file__).resolve().parents[2] / "var" / "browser"


@pytest.fixture
def world(sqlite_url: str, tmp_path: Path):
    ehr = StrictEhr().start()
    ehr.add({"resourceType": "Practitioner", "id": "coord-1",
             "name": [{"given": ["Casey"], "family": "Coordinator"}]})
    key = RSAKey.generate_key(2048, parameters={"kid": "refloop-1"})
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(key.as_pem(private=True))
    app: list = []
    server = make_server("127.0.0.1", 0, lambda e, s: app[0](e, s), threaded=True)
    app_url = f"http://localhost:{server.server_port}"
    settings = Settings(var_dir=tmp_path / "var", database_url=sqlite_url,
                        public_base_url=app_url, sections={"smart": {
        "tenants": [{"name": "general", "iss": [ehr.fhir], "client_id": "refloop-test",
                     "ehr_origins": [ehr.base], "scopes": SCOPES,
                     "private_key_file": str(key_file), "kid": "refloop-1"}]}})
    services = build_services(settings)
    app.append(create_app(services))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ehr.register("refloop-test", f"{app_url}/smart/callback", SCOPES,
                 jwks={"keys": [key.as_dict(private=False) | {"kid": "refloop-1"}]})
    yield ehr, services, app_url
    server.shutdown()
    services.close()
    ehr.stop()


def _referral(services, key: str, specialty: str, priority: str) -> Referral:
    draft = Referral(id=new_referral_id(), source_key=f"b|ServiceRequest/{key}",
                     service_request=f"ServiceRequest/{key}", patient=f"Patient/{key}",
                     specialty=specialty, priority=priority, payer="Acme Health")
    return services.referrals.open(draft, Command("detect"))[0]


def test_coordinator_launches_in_ehr_frame_filters_opens_and_accepts(chrome, world):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    ehr, services, app_url = world
    cardio = _referral(services, "sr-cardio", "cardiology", "urgent")
    _referral(services, "sr-derm", "dermatology", "routine")
    handle = ehr.new_launch(user="Practitioner/coord-1")
    launch = f"{app_url}/smart/launch?{urlencode({'iss': ehr.fhir, 'launch': handle})}"
    chrome.get(f"{ehr.base}/ehr?{urlencode({'app': launch})}")
    wait = WebDriverWait(chrome, 20)
    assert chrome.find_element(By.ID, "ehr").text == "Strict EHR chart"
    wait.until(ec.frame_to_be_available_and_switch_to_it((By.ID, "app")))
    try:
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.worklist")))
    except Exception as exc:
        raise AssertionError(f"the launch did not reach the worklist in the frame; frame: "
                             f"{chrome.page_source[:1500]}; EHR saw: {ehr.requests}") from exc
    assert "Referral worklist" in chrome.find_element(By.TAG_NAME, "h1").text
    assert "Casey Coordinator" in chrome.page_source

    # filter: cardiology only (a GET in the frame keeps the session: the cookie came back)
    chrome.find_element(By.NAME, "specialty").send_keys("cardiology")
    Select(chrome.find_element(By.NAME, "priority")).select_by_value("urgent")
    chrome.find_element(By.CSS_SELECTOR, "form.filters button").click()
    wait.until(lambda d: "specialty=cardiology" in d.execute_script("return location.href"))
    rows = chrome.find_elements(By.CSS_SELECTOR, "table.worklist tbody tr")
    assert len(rows) == 1 and "cardiology" in rows[0].text
    assert "dermatology" not in chrome.page_source

    rows[0].find_element(By.TAG_NAME, "a").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "dl.facts")))
    accept = chrome.find_element(By.CSS_SELECTOR, "button[value='accept']")
    accept.click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "p.done")))
    assert chrome.find_element(By.CSS_SELECTOR, "p.done").text == "Done: Accept."
    assert chrome.find_element(By.CSS_SELECTOR, "dd.stage").text == "accepted"

    chrome.switch_to.default_content()
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / "smart-accepted-in-ehr-frame.png"
    assert chrome.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    assert services.store.get(cardio.id).stage == Stage.ACCEPTED
    cookies = chrome.get_cookies()  # top-level (EHR) cookies: the app's are partitioned
    assert not any(c["name"] == "refloop_smart" for c in cookies)


def test_pages_fit_a_narrow_ehr_side_panel(chrome, world):
    """At 380 px (an EHR side panel) the worklist and referral page need no sideways scroll."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    ehr, services, app_url = world
    narrow = _referral(services, "sr-narrow", "gastroenterology", "asap")
    long_source = ("fhir:https://ehr-gateway.north-valley-health-system.example.org/fhir/r4/"
                   "ServiceRequest/4f1c2b7e-9a0d-4c55-8e21-long-identifier-without-breaks/"
                   "_history/17")
    services.referrals.act(narrow.id, Command("accept", source=long_source))
    handle = ehr.new_launch(user="Practitioner/coord-1")
    launch = f"{app_url}/smart/launch?{urlencode({'iss': ehr.fhir, 'launch': handle})}"
    chrome.get(f"{ehr.base}/ehr?{urlencode({'app': launch, 'width': 380})}")
    wait = WebDriverWait(chrome, 20)
    wait.until(ec.frame_to_be_available_and_switch_to_it((By.ID, "app")))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.worklist")))
    overflow = "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    assert chrome.execute_script("return document.documentElement.clientWidth") < 400
    assert chrome.execute_script(overflow) <= 0
    chrome.find_element(By.CSS_SELECTOR, "table.worklist tbody a").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "dl.facts")))
    assert chrome.execute_script(overflow) <= 0
    chrome.switch_to.default_content()
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert chrome.save_screenshot(str(SHOTS / "smart-referral-side-panel.png"))


def test_the_worklist_uses_the_width_of_a_wide_window(chrome, world):
    """At 1280 px the worklist table spans the window (less the page's padding)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    ehr, services, app_url = world
    _referral(services, "sr-wide", "cardiology", "routine")
    handle = ehr.new_launch(user="Practitioner/coord-1")
    chrome.set_window_size(1280, 900)
    chrome.get(f"{app_url}/smart/launch?{urlencode({'iss': ehr.fhir, 'launch': handle})}")
    WebDriverWait(chrome, 20).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "table.worklist")))
    width = chrome.execute_script(
        "return document.querySelector('table.worklist').getBoundingClientRect().width")
    viewport = chrome.execute_script("return document.documentElement.clientWidth")
    assert viewport >= 1200 and width >= viewport - 40, (width, viewport)


def test_app_refuses_to_render_in_a_frame_of_an_unlisted_origin(chrome, world):
    """frame-ancestors lists only the tenant's EHR origin: the same app framed by a page of
    another origin stays blank."""
    from selenium.webdriver.common.by import By

    _ehr, _services, app_url = world
    # a page served by the app's own origin is not an EHR origin of the tenant
    chrome.get(f"{app_url}/smart/jwks.json")
    chrome.execute_script(
        "document.body.innerHTML = '<iframe id=\"f\" src=\"' + arguments[0] + '\"></iframe>'",
        f"{app_url}/smart/launch")
    time.sleep(2)
    chrome.switch_to.frame(chrome.find_element(By.ID, "f"))
    assert "Launch Refloop" not in chrome.page_source
