"""What a newcomer does after `make demo`: open the printed "Open the app" URL, which is the demo
EHR's launch button, and land on the coordinator's worklist through a real SMART EHR launch
(authorization code, PKCE, private_key_jwt, id_token); the server's root page links to it."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from referrals.model import Command, Referral, new_referral_id
from refloop.app import create_app
from refloop.demo_peers import start_demo_ehr
from refloop.services import build_services
from refloop.settings import Settings


@pytest.fixture
def demo(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(var_dir=tmp_path / "var", database_url=database_url, http_port=port)
    # start_demo_ehr sets REFLOOP_SMART__DEMO_EHR for the server's roles; monkeypatch records
    # the variable first so that it is removed again after the test
    monkeypatch.setenv("REFLOOP_SMART__DEMO_EHR", "")
    ehr = start_demo_ehr(settings)
    assert os.environ["REFLOOP_SMART__DEMO_EHR"] == ehr.fhir
    services = build_services(settings.with_changes(sections={"smart": {"demo_ehr": ehr.fhir}}))
    draft = Referral(id=new_referral_id(), source_key="demo|ServiceRequest/sr-demo",
                     service_request="ServiceRequest/sr-demo", patient="Patient/sr-demo",
                     specialty="cardiology", priority="urgent")
    services.referrals.open(draft, Command("detect"))
    server = make_server("127.0.0.1", port, create_app(services), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield ehr, f"http://127.0.0.1:{port}"
    server.shutdown()
    services.close()
    ehr.stop()


def test_the_printed_url_opens_the_worklist_through_an_ehr_launch(chrome, demo):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    ehr, app = demo
    chrome.get(f"{ehr.base}/launch-refloop")
    wait = WebDriverWait(chrome, 20)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.worklist")))
    assert chrome.current_url.startswith(f"{app}/smart/s/")
    assert "Referral worklist" in chrome.page_source and "cardiology" in chrome.page_source
    assert "Casey Coordinator" in chrome.page_source  # the launch's user, read from the EHR
    assert any(r.startswith("POST /auth/token") for r in ehr.requests)

    chrome.get(f"{app}/")
    assert "Refloop is a FHIR-native referral integration server" in chrome.page_source
    facade = chrome.find_element(By.LINK_TEXT, "CapabilityStatement").get_attribute("href")
    assert facade == f"{app}/fhir/metadata"
    chrome.find_element(By.LINK_TEXT, "Open the coordinator's worklist").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.worklist")))
