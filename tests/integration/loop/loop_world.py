"""The loop's test world (imported by the tests under this module's own name): Refloop on a real
database served on 127.0.0.1 (the hook endpoint and the providers' pages), sekmet-fhir as the
referrer's EHR and as the specialist's (two servers, one per test module), a fake clock shared by
the work queue and the loop (a whole ladder runs in a moment), and the helpers that make a
referral come from the referrer's EHR and move it.

Helpers the outreach and hl7 tests also use are built again here, small, so no test directory
imports another's conftest."""

from __future__ import annotations

import asyncio
import base64
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa
from werkzeug.serving import make_server

from referrals.model import Actor, Command, Event, Link, Referral, new_referral_id
from referrals.store.schema import referral_events, work_items
from referrals.worker import Worker
from refloop.app import create_app
from refloop.services import Services, build_services
from refloop.settings import Settings
from refloop.wiring import all_handlers

FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json",
        "Cache-Control": "no-cache"}
COORD = Actor("Practitioner/coord-1", "Casey Coordinator", "human")
#: a one-page PDF, written here (the smallest structure readers accept)
PDF = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
       b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
       b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n"
       b"trailer<</Root 1 0 R>>\n%%EOF\n")


class Clock:
    """Real time plus how far the test moved it on: work stored by other parts at real time
    (the inbox's notifications) is never in this clock's future."""

    def __init__(self) -> None:
        self.offset = timedelta()

    @property
    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    @now.setter
    def now(self, moment: datetime) -> None:
        self.offset = max(timedelta(), moment - datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now


class Ehr:
    """A sekmet-fhir server seen through plain HTTP (what the test does as the other side)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        r = requests.post(f"{self.base}/{resource['resourceType']}", json=resource,
                          headers=FHIR, timeout=30)
        assert r.status_code in (200, 201), r.text
        return dict(r.json())

    def put(self, resource: dict[str, Any]) -> dict[str, Any]:
        r = requests.put(f"{self.base}/{resource['resourceType']}/{resource['id']}",
                         json=resource, headers=FHIR, timeout=30)
        assert r.status_code in (200, 201), r.text
        return dict(r.json())

    def read(self, path: str) -> dict[str, Any]:
        r = requests.get(f"{self.base}/{path}", headers=FHIR, timeout=30)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def search(self, path: str) -> list[dict[str, Any]]:
        bundle = self.read(path)
        return [e["resource"] for e in bundle.get("entry") or []
                if e.get("search", {}).get("mode", "match") == "match"]


@dataclass
class World:
    services: Services
    clock: Clock
    url: str
    referrer: Ehr
    specialist: Ehr
    server: Any
    worker: Worker = field(init=False)

    def __post_init__(self) -> None:
        self.worker = Worker(self.services.work, all_handlers(self.services))

    @property
    def loop(self) -> Any:
        return self.services.adapters["loop"]

    def drain(self) -> int:
        total = 0
        for _ in range(50):
            done = self.worker.drain()
            total += done
            if not done:
                return total
        raise AssertionError("the work queue did not settle")

    def advance(self, **delta: float) -> int:
        self.clock.now += timedelta(**delta)
        return self.drain()

    def referral(self, specialty: str = "cardiology", *, accept: bool = True,
                 service_request: dict[str, Any] | None = None,
                 birth_date: str = "1958-11-02") -> Referral:
        """A referral whose ServiceRequest, Patient and requester live on the referrer's EHR
        (as the subscriptions adapter would have stored them)."""
        tag = uuid.uuid4().hex[:6]
        patient = self.referrer.create({
            "resourceType": "Patient", "name": [{"family": f"Moreau-{tag}", "given": ["Lena"]}],
            "birthDate": birth_date,
            "identifier": [{"system": "https://riverside.example/mrn", "value": f"MRN{tag}"}]})
        doctor = self.referrer.create({"resourceType": "Practitioner",
                                       "name": [{"family": "Okoye", "given": ["Ben"]}]})
        sr = self.referrer.create({
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005",
                                      "display": "Patient referral"}]}],
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "306206005",
                                 "display": "Referral to service"}]},
            "subject": {"reference": f"Patient/{patient['id']}"},
            "requester": {"reference": f"Practitioner/{doctor['id']}"},
            "authoredOn": self.clock.now.isoformat(), **(service_request or {})})
        base = self.referrer.base
        for resource in (patient, doctor, sr):
            self.services.resources.put(resource, server=base)
        draft = Referral(id=new_referral_id(), source_key=f"fhir|{base}|ServiceRequest/{sr['id']}",
                         service_request=f"ServiceRequest/{sr['id']}",
                         patient=f"Patient/{patient['id']}",
                         requester=f"Practitioner/{doctor['id']}", specialty=specialty)
        referral, _ = self.services.referrals.open(draft, Command("detect", at=self.clock.now))
        if accept:
            referral = self.act(referral.id, "accept")
        self.drain()
        return referral

    def act(self, referral_id: str, action: str, **kw: Any) -> Referral:
        return self.services.referrals.act(referral_id, Command(
            action, actor=COORD, at=self.clock.now, source="smart-app", **kw))

    def book(self, referral_id: str, start: datetime) -> Referral:
        appointment = {"resourceType": "Appointment", "id": uuid.uuid4().hex[:12],
                       "status": "booked", "start": start.isoformat()}
        self.services.resources.put(appointment, server="local")
        return self.act(referral_id, "schedule", changes={"add_outputs": [
            Link("Appointment", f"Appointment/{appointment['id']}", "booked")]})

    def events(self, referral_id: str, action: str | None = None) -> list[Event]:
        return [e for e in self.services.store.events(referral_id)
                if action is None or e.action == action]

    def actions(self, referral_id: str) -> list[str]:
        return [e.action for e in self.services.store.events(referral_id)]

    def pending(self, kind: str) -> list[dict[str, Any]]:
        with self.services.db.read() as c:
            return [dict(r._mapping) for r in c.execute(sa.select(work_items).where(
                work_items.c.kind == kind, work_items.c.status == "pending")
                .order_by(work_items.c.id))]

    def count_events(self, action: str) -> int:
        with self.services.db.read() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(referral_events)
                                 .where(referral_events.c.action == action)).scalar_one())

    def note_on_specialist(self, referral: Referral, *, related: list[dict[str, Any]],
                           text: bytes = PDF, doc_status: str = "final") -> dict[str, Any]:
        return self.specialist.create({
            "resourceType": "DocumentReference", "status": "current", "docStatus": doc_status,
            "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4",
                                 "display": "Consult note"}]},
            "date": self.clock.now.isoformat(),
            "context": {"related": related},
            "content": [{"attachment": {"contentType": "application/pdf",
                                        "data": base64.b64encode(text).decode(),
                                        "title": "consult-note.pdf"}}]})

    def sr_url(self, referral: Referral) -> str:
        return f"{self.referrer.base}/{referral.service_request}"


def loop_settings(database_url: str, tmp_path: Path, url: str, section: dict[str, Any],
                  **sections: Any) -> Settings:
    return Settings(var_dir=tmp_path / "var", database_url=database_url,
                    public_base_url=url, sections={"loop": section, **sections})


def make_world(database_url: str, tmp_path: Path, referrer: Ehr, specialist: Ehr,
               section: dict[str, Any], **sections: Any) -> World:
    late = _Late()
    server = make_server("127.0.0.1", 0, late, threaded=True)
    url = f"http://localhost:{server.server_port}"
    services = build_services(loop_settings(database_url, tmp_path, url, section, **sections))
    late.app = create_app(services)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    clock = Clock()
    services.work.clock = clock
    services.adapters["loop"].core.clock = clock
    subs = services.adapters.get("subscriptions")
    if subs is not None:
        subs.registry.base_url = url
    return World(services, clock, url, referrer, specialist, server)


def close_world(world: World) -> None:
    world.server.shutdown()
    world.server.server_close()
    world.services.close()


class _Late:
    """A WSGI app set after the server knows its port (the public URL goes into the config)."""

    app: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.app(environ, start_response)


class Partner:
    """A real MLLP peer: python-hl7's asyncio MLLP server on 127.0.0.1 (port 0) in a thread,
    recording every message and answering AA."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Partner:
        self._thread.start()
        assert self._ready.wait(10), "the MLLP partner did not start"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        from hl7.mllp import start_hl7_server

        async def serve(reader: Any, writer: Any) -> None:
            try:
                while not writer.is_closing():
                    message = await reader.readmessage()
                    self.received.append(str(message))
                    writer.writemessage(message.create_ack("AA"))
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            start_hl7_server(serve, "127.0.0.1", 0, encoding="utf-8", limit=2 ** 24))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
