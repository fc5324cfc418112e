"""The outcomes dashboard in headless Chromium at 380 px (a phone, a narrow EHR side panel) and
1280 px: no horizontal scroll, every SVG label rendered at 11 px or more and inside the page,
the charts drawn, a number opening its referrals, and axe-core finding no serious or critical
violation. Full-page screenshots are kept under var/browser/ for people to look at."""

from __future__ import annotations

import random
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration" / "smart"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit" / "analytics"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from axe import serious_violations
from histories import october, random_history, replay
from strict_ehr import StrictEhr

from refloop.app import create_app
from refloop.services import build_services
from refloop.settings import Settings

SCOPES = "launch openid fhirUser online_access user/Practitioner.rs user/Patient.rs"
SHOTS = Path(__file__).resolve().parents[2] / "var" / "browser"
VIEW = {"since": "2026-05-01", "until": "2026-10-31"}

#: every SVG text: its rendered size (CSS font size times the SVG's scale on screen) and edges
LABELS = """
const svgs = Array.from(document.querySelectorAll('svg'));
return Array.from(document.querySelectorAll('svg text')).map(t => {
  const box = t.getBoundingClientRect();
  return {text: t.textContent, size: parseFloat(getComputedStyle(t).fontSize) *
          t.getScreenCTM().a, left: box.left, right: box.right, top: box.top,
          bottom: box.bottom, svg: svgs.indexOf(t.ownerSVGElement)};
});"""


def overlapping(labels: list[dict]) -> list[tuple[str, str]]:
    """Pairs of labels of one chart whose boxes overlap (unreadable)."""
    found = []
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            if a["svg"] == b["svg"] and a["left"] < b["right"] - 0.5 and \
                    b["left"] < a["right"] - 0.5 and a["top"] < b["bottom"] - 0.5 and \
                    b["top"] < a["bottom"] - 0.5:
                found.append((a["text"], b["text"]))
    return found


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
    rng = random.Random(380)
    start = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    for i in range(160):  # six months of referrals on every path of the funnel
        replay(services.referrals, random_history(rng, f"b{i:03d}", start + timedelta(
            hours=rng.randrange(0, 24 * 175))))
    for history in october():
        replay(services.referrals, history)
    app.append(create_app(services))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ehr.register("refloop-test", f"{app_url}/smart/callback", SCOPES,
                 jwks={"keys": [key.as_dict(private=False) | {"kid": "refloop-1"}]})
    yield ehr, services, app_url
    server.shutdown()
    services.close()
    ehr.stop()


def test_the_dashboard_is_legible_from_380_to_1280_px(chrome, world):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    ehr, _services, app_url = world
    handle = ehr.new_launch(user="Practitioner/coord-1")
    chrome.get(f"{app_url}/smart/launch?{urlencode({'iss': ehr.fhir, 'launch': handle})}")
    wait = WebDriverWait(chrome, 20)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "nav a")))
    dashboard = chrome.find_element(By.LINK_TEXT, "Dashboard").get_attribute("href")
    SHOTS.mkdir(parents=True, exist_ok=True)
    for width in (380, 1280):
        chrome.set_window_size(width, 900)
        chrome.get(f"{dashboard}?{urlencode(VIEW)}")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "svg.outcome")))
        viewport = chrome.execute_script("return document.documentElement.clientWidth")
        assert abs(viewport - width) <= 20, viewport  # the window is the width asked for
        scroll = chrome.execute_script("return document.documentElement.scrollWidth")
        assert scroll <= viewport, f"horizontal scroll at {width} px: {scroll} > {viewport}"
        labels = chrome.execute_script(LABELS)
        assert len(labels) > 40  # funnel, cohorts and four distributions
        small = [(t["text"], round(t["size"], 1)) for t in labels if t["size"] < 11]
        assert not small, f"SVG text under 11 px at {width} px: {small[:5]}"
        outside = [t["text"] for t in labels if t["left"] < 0 or t["right"] > viewport + 0.5]
        assert not outside, f"SVG text beyond the page at {width} px: {outside[:5]}"
        clashes = overlapping(labels)
        assert not clashes, f"SVG labels overlap at {width} px: {clashes[:5]}"
        assert len(chrome.find_elements(By.CSS_SELECTOR, "svg.outcome")) == 6
        assert not serious_violations(chrome)
        height = chrome.execute_script("return document.documentElement.scrollHeight")
        chrome.set_window_size(width, min(height + 120, 8000))
        assert chrome.save_screenshot(str(SHOTS / f"outcomes-dashboard-{width}.png"))
    completion = chrome.find_element(By.PARTIAL_LINK_TEXT, "Completion")
    completion.click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.stack")))
    assert "Visit completed" in chrome.find_element(By.TAG_NAME, "h1").text
    assert chrome.find_elements(By.CSS_SELECTOR, "table.stack tbody a[href*='/referrals/']")
