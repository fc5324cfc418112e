"""Sample EHR data (built here, not official examples), the EHR peer (sekmet-fhir 0.1.1,
in-process uvicorn on a free loopback port, simulator off) and Refloop's web server as `refloop
serve` runs it (the HTTP edge around the Flask app, refloop/edge) on a real port, so the peer can
deliver to it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import uvicorn

from refloop.app import create_edge_app
from refloop.edge.server import RunningEdge, serve_in_thread
from refloop.services import Services, build_services
from refloop.settings import Settings


def patient(family: str = "Okafor", given: str = "Ada") -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": [given]}],
            "gender": "female", "birthDate": "1970-01-01"}


def practitioner(family: str = "Lindqvist") -> dict[str, Any]:
    return {"resourceType": "Practitioner", "name": [{"family": family, "given": ["Eva"]}]}


def coverage(patient_id: str, payer: str = "Acme Health Plan") -> dict[str, Any]:
    return {"resourceType": "Coverage", "status": "active",
            "beneficiary": {"reference": f"Patient/{patient_id}"},
            "payor": [{"display": payer}]}


def service_request(patient_id: str, requester_id: str, coverage_id: str | None = None, *,
                    priority: str = "urgent", status: str = "active",
                    reason: str = "Chest pain on exertion") -> dict[str, Any]:
    sr: dict[str, Any] = {
        "resourceType": "ServiceRequest", "status": status, "intent": "order",
        "priority": priority,
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005",
                                  "display": "Patient referral"}]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "183519002",
                             "display": "Referral to cardiology service"}]},
        "reasonCode": [{"text": reason}],
        "performerType": {"text": "Cardiology"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "requester": {"reference": f"Practitioner/{requester_id}"},
    }
    if coverage_id:
        sr["insurance"] = [{"reference": f"Coverage/{coverage_id}"}]
    return sr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sekmet:
    base: str
    ctx: Any
    server: uvicorn.Server
    thread: threading.Thread

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        r = requests.post(f"{self.base}/{resource['resourceType']}", json=resource, timeout=10,
                          headers={"Content-Type": "application/fhir+json"})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def update(self, resource: dict[str, Any]) -> dict[str, Any]:
        r = requests.put(f"{self.base}/{resource['resourceType']}/{resource['id']}",
                         json=resource, timeout=10,
                         headers={"Content-Type": "application/fhir+json"})
        assert r.status_code in (200, 201), r.text
        return dict(r.json())

    def read(self, path: str) -> dict[str, Any]:
        r = requests.get(f"{self.base}/{path}", timeout=10)
        assert r.status_code == 200, r.text
        return dict(r.json())


def start_sekmet(tmp: Path, **extra: Any) -> Sekmet:
    from sekmet.config import Settings as SekmetSettings
    from sekmet.main import create_app as sekmet_app

    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    settings = SekmetSettings(base_url=base, host="127.0.0.1", port=port,
                              db_path=str(tmp / "sekmet.db"), data_dir=str(tmp),
                              simulator={"enabled": False}, log_inbound=False,
                              own_private_key_path=str(tmp / "sekmet_key.pem"), **extra)
    app = sekmet_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: _answers(f"{base}/metadata"), 20, "sekmet did not start")
    return Sekmet(base, app.state.ctx, server, thread)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def wait_for(check: Callable[[], Any], seconds: float, message: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(message)


class Listener:
    """Refloop's web server on a real loopback port; stop() and start() simulate downtime."""

    def __init__(self, services: Services, port: int) -> None:
        self.services = services
        self.port = port
        self.edge_app = create_edge_app(services)
        self.app = self.edge_app.wsgi  # the Flask app behind the edge
        self.server: RunningEdge | None = None

    def start(self) -> None:
        self.server = serve_in_thread(self.edge_app, "127.0.0.1", self.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def sekmet(tmp_path: Path) -> Iterator[Sekmet]:
    peer = start_sekmet(tmp_path / "ehr")
    yield peer
    peer.server.should_exit = True
    peer.thread.join(timeout=10)


def build_listener_services(database_url: str, var_dir: Path,
                            sections: dict[str, Any] | None = None,
                            port: int | None = None) -> Services:
    settings = Settings(var_dir=var_dir, database_url=database_url,
                        http_port=port or free_port(), sections=sections or {})
    return build_services(settings)


@pytest.fixture
def listener_services(database_url: str, tmp_path: Path) -> Iterator[Services]:
    built = build_listener_services(database_url, tmp_path / "var")
    yield built
    built.close()


@pytest.fixture
def listener(listener_services: Services) -> Iterator[Listener]:
    running = Listener(listener_services, listener_services.settings.http_port)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def kit() -> SimpleNamespace:
    """Helpers for the tests of this folder (pytest's importlib mode cannot import conftest)."""
    return SimpleNamespace(wait_for=wait_for, patient=patient, practitioner=practitioner,
                           coverage=coverage, service_request=service_request,
                           start_sekmet=start_sekmet, Listener=Listener, free_port=free_port,
                           build_listener_services=build_listener_services)
