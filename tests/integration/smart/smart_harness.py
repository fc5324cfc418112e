"""Helpers of the SMART app tests: the app served on 127.0.0.1:0, the settings of a tenant on the
strict EHR (strict_ehr.py), a cookie-keeping HTTP client, and a log capture. A module of its own
(not conftest.py) so that other test directories can import it by a name no other directory uses."""

from __future__ import annotations

import http.cookiejar
import logging
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from werkzeug.serving import make_server

sys.path.insert(0, str(Path(__file__).resolve().parent))

from strict_ehr import StrictEhr

from refloop.services import Services
from refloop.settings import Settings

SCOPES = ("launch openid fhirUser online_access user/ServiceRequest.rs user/Patient.rs "
          "user/Coverage.rs user/Practitioner.rs user/PractitionerRole.rs")
CLIENT_ID = "refloop-test"


class Browser(requests.Session):
    """Sends Secure cookies over http://127.0.0.1, as Chromium does for localhost (requests
    would otherwise merge the jar into one with the default, https-only policy)."""

    def __init__(self) -> None:
        super().__init__()
        self.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(
            secure_protocols=("https", "wss", "http")))

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        prepared = super().prepare_request(request)
        prepared.headers.pop("Cookie", None)
        prepared.prepare_cookies(self.cookies)
        return prepared


def browser_session() -> requests.Session:
    return Browser()


class Served:
    """A server on a free loopback port, listening before the app exists, so the app can be
    configured with its own public URL (`url`): absolute URLs never come from the Host."""

    def __init__(self, app: Any = None) -> None:
        self.app = app
        self.server = make_server("127.0.0.1", 0, lambda e, s: self.app(e, s), threaded=True)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()


@dataclass
class Harness:
    ehr: StrictEhr
    services: Services
    url: str
    key_file: Path
    logs: list[logging.LogRecord] = field(default_factory=list)
    responses: list[requests.Response] = field(default_factory=list)

    def browser(self) -> requests.Session:
        session = browser_session()
        session.hooks["response"].append(lambda r, *a, **k: self.responses.append(r))
        return session

    def launch(self, browser: requests.Session, *, user: str = "Practitioner/coord-1",
               patient: str = "", iss: str | None = None) -> requests.Response:
        handle = self.ehr.new_launch(user=user, patient=patient)
        return browser.get(f"{self.url}/smart/launch",
                           params={"iss": iss or self.ehr.fhir, "launch": handle})


def smart_settings(database_url: str, tmp_path: Path, ehr: StrictEhr, key_file: Path,
                   base_url: str = "", **tenant: Any) -> Settings:
    entry = {"name": "general", "iss": [ehr.fhir, f"http://localhost:{ehr.port}/fhir"],
             "client_id": CLIENT_ID, "ehr_origins": [ehr.base], "scopes": SCOPES,
             "private_key_file": str(key_file), "kid": "refloop-1", **tenant}
    return Settings(var_dir=tmp_path / "var", database_url=database_url, public_base_url=base_url,
                    sections={"smart": {"tenants": [entry], "session_idle_minutes": 15}})


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
