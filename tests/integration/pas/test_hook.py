"""Pend, then the decision through the REAL subscriptions hook endpoint: we create the
organisation-level Subscription at the PAYER SANDBOX (a fake payer: a payer's PAS endpoint
cannot run here); the sandbox POSTs its notification to our hook with the channel header; the
subscriptions adapter stores it and enqueues "pas.notification"; our handler approves."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from pas_client.sandbox import SandboxRules, SandboxServer
from pas_client.sandbox.server import release_pended
from pas_client.store import PriorAuthStore
from referrals.model import Actor, Command, Referral, Stage, new_referral_id
from referrals.worker import Worker
from refloop.app import create_app
from refloop.demo_data import demo_resources
from refloop.services import Services, build_services
from refloop.settings import Settings
from refloop.wiring import all_handlers

COORDINATOR = Actor("PractitionerRole/c1", "Casey", "human")
ITEM = {"key": "hook-1", "patient": {"mrn": "M1", "family": "Doe", "given": "Ann",
                                     "birthDate": "1970-01-01", "gender": "female"},
        "code": "306235009", "display": "Referral to cardiology service",
        "reason": {"code": "I10", "display": "Essential hypertension"}, "priority": "routine",
        "requester": {"npi": "1245319599", "name": "Dr. Reed"},
        "payer": {"name": "Blue Horizon", "id": "BH0042", "member": "M3881"}}


@pytest.fixture
def running(database_url: str, tmp_path: Path) -> Iterator[tuple[Services, SandboxServer]]:
    holder: list[Any] = []
    web = make_server("127.0.0.1", 0, lambda env, start: holder[0](env, start), threaded=True)
    sandbox = SandboxServer(SandboxRules(default="pend", notification_shape="nested")).start()
    settings = Settings(var_dir=tmp_path / "var", database_url=database_url,
                        public_base_url=f"http://127.0.0.1:{web.server_port}", sections={
        "pas": {"organization_name": "Refloop Clinic", "organization_npi": "1234567893"},
        "payers": [{"name": "Blue Horizon", "base_url": sandbox.url, "payer_id": "BH0042",
                    "organization_identifier": "1234567893", "timeout_seconds": 5}]})
    services = build_services(settings)
    assert services.adapters.get("subscriptions") is not None, \
        "the subscriptions adapter must be wired: PAS notifications arrive at its hook endpoint"
    holder.append(create_app(services))
    thread = threading.Thread(target=web.serve_forever, daemon=True)
    thread.start()
    yield services, sandbox
    web.shutdown()
    sandbox.stop()
    services.close()


def test_pended_decision_arrives_through_the_hook(running: tuple[Services, SandboxServer]
                                                  ) -> None:
    services, sandbox = running
    for resource in demo_resources(ITEM).values():
        services.resources.put(resource, server="demo")
    draft = Referral(id=new_referral_id(), source_key="demo|ServiceRequest/hook-1",
                     service_request="ServiceRequest/hook-1", patient="Patient/hook-1",
                     payer="Blue Horizon")
    referral, _ = services.referrals.open(draft, Command("detect", actor=COORDINATOR))
    services.referrals.act(referral.id, Command("accept", actor=COORDINATOR))
    worker = Worker(services.work, all_handlers(services))
    services.adapters["pas"].enqueue_submit(referral.id, "Blue Horizon")
    worker.drain()
    [request] = PriorAuthStore(services.db).for_referral(referral.id)
    assert request.status == "pended"
    [subscription] = sandbox.state.subscriptions.values()
    assert subscription["_criteria"]["extension"][0]["valueString"] == \
        "org-identifier=1234567893"
    assert subscription["channel"]["header"][0].startswith("Authorization: Bearer ")
    release_pended(sandbox.state)
    assert sandbox.state.delivered[-1]["status"] // 100 == 2
    worker.drain()
    done = PriorAuthStore(services.db).try_get(request.id)
    assert done is not None and done.status == "approved"
    assert services.store.get(referral.id).stage == Stage.OUTREACH
