"""The FHIR facade read by a client nobody here wrote: SMART's `fhirclient` (its R4 models
validate every element they parse) reads the CapabilityStatement, searches Tasks and follows the
Bundle's next links to the end, with a SMART Backend Services bearer token."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from fhirclient import server as fhir_server
from fhirclient.models.bundle import Bundle
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.task import Task

from referrals.model import Command, Referral, new_referral_id
from refloop.app import create_edge_app
from refloop.edge.server import serve_in_thread
from refloop.services import build_services
from refloop.settings import Settings

REFERRALS = 5


def test_fhirclient_reads_the_capability_statement_and_pages_through_tasks(
        database_url: str, tmp_path: Path, fhir_auth) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    services = build_services(Settings(var_dir=tmp_path / "var", database_url=database_url,
                                       public_base_url=url))
    running = serve_in_thread(create_edge_app(services), "127.0.0.1", port)
    try:
        made = set()
        for n in range(REFERRALS):
            draft = Referral(id=new_referral_id(), source_key=f"t|ServiceRequest/fc-{n}",
                             service_request=f"ServiceRequest/fc-{n}", patient=f"Patient/fc-{n}",
                             specialty="cardiology", priority="routine")
            made.add(services.referrals.open(draft, Command("detect"))[0].id)
        server = fhir_server.FHIRServer(None, base_uri=f"{url}/fhir/")
        server.session.headers["Authorization"] = \
            f"Bearer {fhir_auth.token(url, services, 'system/Task.rs')}"

        capability = CapabilityStatement.read_from("metadata", server)
        assert capability.fhirVersion == "4.0.1"
        served = {r.type for r in capability.rest[0].resource}
        assert "Task" in served

        bundle = Task.where(struct={"_count": "2"}).perform(server)
        seen: list[str] = []
        pages = 0
        while bundle is not None:
            pages += 1
            seen += [entry.resource.id for entry in bundle.entry or []
                     if isinstance(entry.resource, Task)]
            following = next((link.url for link in bundle.link or [] if link.relation == "next"),
                             None)
            bundle = Bundle(server.request_json(following)) if following else None
        assert sorted(seen) == sorted(made) and pages == 3

        server.session.headers.pop("Authorization")
        with pytest.raises(Exception, match="401"):
            Task.where(struct={"_count": "2"}).perform(server)
    finally:
        running.stop()
        services.close()
