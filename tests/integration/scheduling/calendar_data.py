"""Calendars for the scheduling tests (built here, not official examples): a patient, a
practitioner, a location, a Schedule and its free Slots, created on a real FHIR server
(sekmet-fhir in process, or the HAPI peer); and the sekmet-fhir peer itself."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


@dataclass
class Calendar:
    base: str
    patient: str
    practitioner: str
    location: str
    schedule: str
    slots: list[str] = field(default_factory=list)
    starts: list[datetime] = field(default_factory=list)
    birth_date: str = "1961-04-23"

    def read(self, path: str) -> dict[str, Any]:
        r = requests.get(f"{self.base}/{path}", headers={**FHIR, "Cache-Control": "no-cache"},
                         timeout=20)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def search(self, path: str) -> list[dict[str, Any]]:
        r = requests.get(f"{self.base}/{path}", headers={**FHIR, "Cache-Control": "no-cache"},
                         timeout=20)
        assert r.status_code == 200, r.text
        return [e["resource"] for e in r.json().get("entry") or []
                if e.get("search", {}).get("mode", "match") == "match"]


def create(base: str, resource: dict[str, Any]) -> dict[str, Any]:
    r = requests.post(f"{base}/{resource['resourceType']}", json=resource, headers=FHIR,
                      timeout=30)
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


def put(base: str, resource: dict[str, Any]) -> dict[str, Any]:
    r = requests.put(f"{base}/{resource['resourceType']}/{resource['id']}", json=resource,
                     headers=FHIR, timeout=30)
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


def make_calendar(base: str, *, slots: int = 4, first: datetime | None = None,
                  minutes: int = 30, language: str = "en") -> Calendar:
    """A fresh calendar: its own practitioner, so tests never see each other's slots."""
    tag = uuid.uuid4().hex[:8]
    patient = create(base, {
        "resourceType": "Patient", "name": [{"family": f"Okafor-{tag}", "given": ["Ada"]}],
        "gender": "female", "birthDate": "1961-04-23",
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47",
                                                    "code": language}]}, "preferred": True}]})
    practitioner = create(base, {"resourceType": "Practitioner",
                                 "name": [{"family": f"Lindqvist-{tag}", "given": ["Eva"],
                                           "prefix": ["Dr"]}]})
    location = create(base, {"resourceType": "Location", "status": "active",
                             "name": "Heart Clinic, 12 Elm Street"})
    schedule = create(base, {
        "resourceType": "Schedule", "active": True,
        "actor": [{"reference": f"Practitioner/{practitioner['id']}"},
                  {"reference": f"Location/{location['id']}"}]})
    start = first or (datetime.now(UTC) + timedelta(days=10)).replace(
        hour=15, minute=0, second=0, microsecond=0)
    calendar = Calendar(base, patient["id"], practitioner["id"], location["id"],
                        schedule["id"])
    for n in range(slots):
        begin = start + timedelta(minutes=minutes * n)
        slot = create(base, {
            "resourceType": "Slot", "schedule": {"reference": f"Schedule/{schedule['id']}"},
            "status": "free", "start": begin.isoformat().replace("+00:00", "Z"),
            "end": (begin + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")})
        calendar.slots.append(f"Slot/{slot['id']}")
        calendar.starts.append(begin)
    return calendar


def destination(calendar: Calendar, **extra: Any) -> dict[str, Any]:
    return {"name": "cardiology", "specialties": ["cardiology"], "source": "fhir",
            "fhir_base": calendar.base,
            "schedule_actors": [f"Practitioner/{calendar.practitioner}"],
            "time_zone": "America/Chicago", "subscribe": False, "phone": "555-0100", **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sekmet:
    base: str
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_sekmet(tmp: Path) -> Sekmet:
    """sekmet-fhir 0.1.1 (PyPI) in process on a free loopback port, simulator off."""
    import uvicorn
    from sekmet.config import Settings as SekmetSettings
    from sekmet.main import create_app as sekmet_app

    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    settings = SekmetSettings(base_url=base, host="127.0.0.1", port=port,
                              db_path=str(tmp / "sekmet.db"), data_dir=str(tmp),
                              simulator={"enabled": False}, log_inbound=False,
                              own_private_key_path=str(tmp / "sekmet_key.pem"))
    server = uvicorn.Server(uvicorn.Config(sekmet_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/metadata", timeout=2).status_code == 200:
                return Sekmet(base, server, thread)
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise AssertionError("sekmet did not start")
