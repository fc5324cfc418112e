"""The facade's AuditEvents: written with group commit (concurrent reads share a commit), and
no patient data leaves when its AuditEvent cannot be written."""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from capability.audit import AuditLog
from referrals.model import Command, Referral, new_referral_id
from referrals.store.schema import resources
from refloop.app import create_app
from refloop.services import Services


def stored(services: Services) -> int:
    with services.db.read() as c:
        return int(c.execute(sa.select(sa.func.count()).select_from(resources).where(
            resources.c.resource_type == "AuditEvent")).scalar_one())


def test_concurrent_records_share_commits(services: Services) -> None:
    commits = []
    event.listen(services.db.engine, "commit", lambda conn: commits.append(1))
    log = AuditLog(services.resources)
    gate = threading.Barrier(24)

    def one(n: int) -> None:
        gate.wait()
        log.record({"resourceType": "AuditEvent", "id": f"a{n}", "recorded": "2026-01-01"})

    threads = [threading.Thread(target=one, args=(n,)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert stored(services) == 24
    assert len(commits) < 24  # at least two events shared a commit


def test_no_data_without_its_audit_event(services: Services, fhir_auth: Any) -> None:
    referral, _ = services.referrals.open(Referral(
        id=new_referral_id(), source_key="x|1", service_request="ServiceRequest/1",
        patient="Patient/secret-patient"), Command("detect"))
    client = create_app(services).test_client()
    headers = fhir_auth.headers(client, services)
    original = services.resources.put

    def broken(resource: dict[str, Any], **kwargs: Any) -> int:
        if resource["resourceType"] == "AuditEvent":
            raise RuntimeError("audit store unavailable")
        return original(resource, **kwargs)

    services.resources.put = broken  # type: ignore[method-assign]
    try:
        for path in (f"/fhir/Task/{referral.id}", "/fhir/Task"):
            answer = client.get(path, headers=headers)
            assert answer.status_code == 500, path
            assert "secret-patient" not in answer.get_data(as_text=True)
            assert answer.get_json()["resourceType"] == "OperationOutcome"
    finally:
        services.resources.put = original  # type: ignore[method-assign]
    assert client.get(f"/fhir/Task/{referral.id}", headers=headers).status_code == 200
