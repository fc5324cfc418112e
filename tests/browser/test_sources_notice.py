"""A launch whose organisation's configured referral sources match no referral: the worklist and
the dashboard say so in a notice naming the setting, fit 380 px without horizontal scroll, and
axe-core finds no serious or critical violation (headless Chromium, 380 and 1280 px)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from urllib.parse import urlencode

import pytest
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration" / "smart"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from axe import serious_violations
from strict_ehr import StrictEhr

from refloop.app import create_app
from refloop.services import build_services
from refloop.settings import Settings

SCOPES = "launch openid fhirUser online_access user/Practitioner.rs user/Patient.rs"


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
                        public_base_url=app_url, sections={
        "smart": {"tenants": [{"name": "general", "iss": [ehr.fhir], "client_id": "refloop-test",
                               "ehr_origins": [ehr.base], "scopes": SCOPES,
                               "private_key_file": str(key_file), "kid": "refloop-1",
                               "access_tenant": "general"}]},
        "access": {"tenants": [{"name": "general", "sources": ["hl7|GENERAL_ADT"]}]}})
    services = build_services(settings)
    app.append(create_app(services))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ehr.register("refloop-test", f"{app_url}/smart/callback", SCOPES,
                 jwks={"keys": [key.as_dict(private=False) | {"kid": "refloop-1"}]})
    yield ehr, app_url
    server.shutdown()
    services.close()
    ehr.stop()


def test_the_notice_is_legible_and_accessible(chrome, world):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    ehr, app_url = world
    handle = ehr.new_launch(user="Practitioner/coord-1")
    chrome.get(f"{app_url}/smart/launch?{urlencode({'iss': ehr.fhir, 'launch': handle})}")
    wait = WebDriverWait(chrome, 20)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "nav a")))
    worklist = chrome.current_url
    dashboard = chrome.find_element(By.LINK_TEXT, "Dashboard").get_attribute("href")
    for width in (380, 1280):
        chrome.set_window_size(width, 900)
        for url in (worklist, dashboard):
            chrome.get(url)
            notice = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".notice")))
            assert notice.get_attribute("role") == "status"
            assert "configured referral sources" in notice.text
            assert "[[access.tenants]]" in notice.text and "hl7|GENERAL_ADT" in notice.text
            viewport = chrome.execute_script("return document.documentElement.clientWidth")
            scroll = chrome.execute_script("return document.documentElement.scrollWidth")
            assert scroll <= viewport, f"horizontal scroll at {width} px on {url}"
            assert not serious_violations(chrome), url
