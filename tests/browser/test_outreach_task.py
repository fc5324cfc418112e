"""The coordinator call task in the SMART app, in headless Chromium: the urgent ladder reaches
its last rung, the task appears on the worklist, the coordinator records the outcome on the
referral page, and the ladder moves on (the outcome is recorded on the referral and ends the
automatic outreach). Messages go to THE TWILIO SANDBOX (a fake gateway; the real one cannot run
here) and a local aiosmtpd server."""

from __future__ import annotations

import sys
import threading
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration" / "smart"))
sys.path.append(str(Path(__file__).resolve().parent.parent / "integration" / "outreach"))

from outreach_harness import START, Clock, Harness, _Late, _sandboxes, outreach_settings
from strict_ehr import StrictEhr

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
    sandboxes = _sandboxes()
    twilio, mail = next(sandboxes)
    late = _Late()
    server = make_server("127.0.0.1", 0, late, threaded=True)
    app_url = f"http://localhost:{server.server_port}"
    twilio.rules.inbound_url = f"{app_url}/outreach/twilio/sms"
    base = outreach_settings(sqlite_url, tmp_path, app_url, twilio, mail)
    smart = {"tenants": [{
        "name": "general", "iss": [ehr.fhir], "client_id": "refloop-test",
        "ehr_origins": [ehr.base], "scopes": SCOPES, "private_key_file": str(key_file),
        "kid": "refloop-1"}]}
    settings = Settings(var_dir=base.var_dir, database_url=sqlite_url, public_base_url=app_url,
                        sections={**base.sections, "smart": smart})
    services = build_services(settings)
    late.app = create_app(services)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ehr.register("refloop-test", f"{app_url}/smart/callback", SCOPES,
                 jwks={"keys": [key.as_dict(private=False) | {"kid": "refloop-1"}]})
    clock = Clock()
    services.work.clock = clock
    services.adapters["outreach"].clock = clock
    twilio.clock = clock
    yield ehr, Harness(services, services.adapters["outreach"], twilio, mail, app_url, clock)
    server.shutdown()
    services.close()
    ehr.stop()
    for _ in sandboxes:
        pass


def test_call_task_appears_outcome_recorded_and_the_ladder_moves_on(chrome, world):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    ehr, h = world
    h.patient("b1")
    referral = h.referral("b1", priority="urgent")
    h.settle()
    h.at(START + timedelta(hours=24, minutes=1))
    [task] = h.services.tasks.open_for(referral.id)
    assert task.kind == "call-patient"

    handle = ehr.new_launch(user="Practitioner/coord-1")
    launch = f"{h.url}/smart/launch?{urlencode({'iss': ehr.fhir, 'launch': handle})}"
    chrome.get(f"{ehr.base}/ehr?{urlencode({'app': launch})}")
    wait = WebDriverWait(chrome, 20)
    wait.until(ec.frame_to_be_available_and_switch_to_it((By.ID, "app")))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "section.tasks")))
    tasks = chrome.find_element(By.CSS_SELECTOR, "section.tasks")
    assert "Open tasks (1)" in tasks.text and "Call the patient" in tasks.text
    tasks.find_element(By.LINK_TEXT, "Open the referral").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "form.task-outcome")))
    outreach = chrome.find_element(By.ID, "comm-h").find_element(By.XPATH, "..").text
    assert "SMS" in outreach and "call" in outreach  # the ladder's messages on the timeline
    Select(chrome.find_element(By.CSS_SELECTOR, "form.task-outcome select[name=outcome]")
           ).select_by_value("reached")
    chrome.find_element(By.CSS_SELECTOR, "form.task-outcome input[name=note]").send_keys(
        "booked by phone for Friday")
    chrome.find_element(By.CSS_SELECTOR, "form.task-outcome button").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "p.done")))
    assert "task outcome recorded" in chrome.find_element(By.CSS_SELECTOR, "p.done").text
    assert "Open tasks (0)" in chrome.page_source

    h.settle()  # the outcome is handed to the ladder through the work queue
    last = h.services.store.events(referral.id)[-1]
    assert (last.action, last.reason.code) == ("record-outreach", "reached")
    assert last.actor.reference == "Practitioner/coord-1"
    [plan] = h.rt.ostore.plans_for(referral.id)
    assert plan.status == "stopped" and "reached" in plan.stop_reason
    chrome.execute_script("location.reload()")  # the frame only
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.timeline")))
    assert "phone call by a coordinator: booked by phone for Friday" in chrome.page_source
    chrome.switch_to.default_content()
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert chrome.save_screenshot(str(SHOTS / "smart-outreach-task-recorded.png"))
