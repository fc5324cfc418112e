"""The prior-authorization flow end to end, on SQLite and PostgreSQL.

The payer is the PAYER SANDBOX (pas_client/sandbox): a fake, because a payer's PAS endpoint
cannot run here. It listens on 127.0.0.1 (port 0). Pended decisions: these tests enqueue the
"pas.notification" work item the subscriptions adapter would enqueue (payload built from the
sandbox's real notification Bundle), and test_hook.py goes through the real hook endpoint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from pas_client.conformance import check_bundle
from pas_client.sandbox import SandboxRules, SandboxServer
from pas_client.sandbox.responses import build_notification
from pas_client.sandbox.server import release_pended
from pas_client.store import PriorAuthStore
from referrals.model import Actor, Command, Referral, Stage, new_referral_id
from referrals.worker import Worker
from refloop.demo_data import demo_resources
from refloop.services import Services, build_services
from refloop.settings import Settings
from refloop.wiring import all_handlers

DEMO = json.loads((Path(__file__).resolve().parents[3] / "fixtures" / "demo" /
                   "referrals.json").read_text("utf-8"))
COORDINATOR = Actor("PractitionerRole/c1", "Casey", "human")


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    server = SandboxServer(SandboxRules(default="approve",
                                        by_code={"99245": "pend", "99244": "deny",
                                                 "99243": "modify:99242"})).start()
    yield server
    server.stop()


@pytest.fixture
def pas_services(database_url: str, tmp_path: Path, sandbox: SandboxServer
                 ) -> Iterator[Services]:
    settings = Settings(var_dir=tmp_path / "var", database_url=database_url, sections={
        "pas": {"organization_name": "Refloop Clinic", "organization_npi": "1234567893",
                "organization_tin": "123456789",
                "service_codes": {"306235009": "99245", "306241006": "99244"}},
        "payers": [{"name": "Blue Horizon", "base_url": sandbox.url, "payer_id": "BH0042",
                    "version": "2.2.1", "subscribe": False, "timeout_seconds": 5}]})
    services = build_services(settings)
    yield services
    services.close()


def open_referral(services: Services, item: dict[str, Any], stage: str = "accept") -> Referral:
    for resource in demo_resources(item).values():
        services.resources.put(resource, server="demo")
    draft = Referral(id=new_referral_id(), source_key=f"demo|ServiceRequest/{item['key']}",
                     service_request=f"ServiceRequest/{item['key']}",
                     patient=f"Patient/{item['key']}", priority=item["priority"],
                     payer="Blue Horizon")
    referral, _ = services.referrals.open(draft, Command("detect", actor=COORDINATOR))
    return services.referrals.act(referral.id, Command(stage, actor=COORDINATOR))


def demo_item(code: str) -> dict[str, Any]:
    return next(i for i in DEMO if i["code"] == code)


def run(services: Services) -> None:
    Worker(services.work, all_handlers(services)).drain()


def submit(services: Services, referral: Referral) -> list[Any]:
    services.adapters["pas"].enqueue_submit(referral.id, "Blue Horizon")
    run(services)
    return PriorAuthStore(services.db).for_referral(referral.id)


def test_pend_notification_then_approval(pas_services: Services,
                                         sandbox: SandboxServer) -> None:
    referral = open_referral(pas_services, demo_item("306235009"))  # cardiology -> 99245 pend
    [request] = submit(pas_services, referral)
    assert request.status == "pended"
    held = pas_services.store.get(referral.id)
    assert held.stage == Stage.AUTH_PENDING and held.auth_state == "pended"
    task = pas_services.resources.try_get("Task", request.task_id, server="local")
    assert task["partOf"] == [{"reference": f"Task/{referral.id}"}]
    assert task["focus"]["reference"] == f"Claim/{request.claim_identifier.lower()}"
    assert task["status"] == "in-progress"
    # the sandbox decides; its notification Bundle becomes the adapter's work payload
    sandbox.state.rules.after_pend = "approve"
    release_pended(sandbox.state)
    record = sandbox.state.claims[request.claim_identifier]
    note = build_notification({"id": "sub1"}, record["response"], 1, "flattened")
    pas_services.work.enqueue("pas.notification", {
        "inbox_id": 0, "server": sandbox.url, "hook_id": "h", "subscription": "sub1",
        "notification_type": "event-notification",
        "events": [{"event_number": 1, "focus": note["entry"][1]["fullUrl"]}],
        "resources": [e["resource"] for e in note["entry"][1:]]}, key="note-1")
    run(pas_services)
    done = PriorAuthStore(pas_services.db).try_get(request.id)
    assert done is not None and done.status == "approved"
    assert done.auth_number == record["number"]
    moved = pas_services.store.get(referral.id)
    assert moved.stage == Stage.OUTREACH and moved.auth_state == "approved"
    task = pas_services.resources.try_get("Task", request.task_id, server="local")
    assert task["status"] == "completed"
    assert task["output"][0]["valueString"] == record["number"]


def test_redelivered_notification_is_applied_once(pas_services: Services,
                                                  sandbox: SandboxServer) -> None:
    referral = open_referral(pas_services, demo_item("306235009"))
    [request] = submit(pas_services, referral)
    release_pended(sandbox.state)
    response = sandbox.state.claims[request.claim_identifier]["response"]
    for n in range(2):
        pas_services.work.enqueue("pas.notification", {
            "server": sandbox.url, "notification_type": "event-notification",
            "resources": [response["entry"][0]["resource"]]}, key=f"again-{n}")
    run(pas_services)
    events = [e.action for e in pas_services.store.events(referral.id)]
    assert events.count("authorize") == 1


def test_unmatched_claim_response_is_quarantined(pas_services: Services,
                                                 sandbox: SandboxServer) -> None:
    stray = json.loads((Path(__file__).resolve().parents[3] / "fixtures" / "pas" / "v2.2.1" /
                        "ClaimResponse-RejectionResponseExample.json").read_text("utf-8"))
    pas_services.work.enqueue("pas.notification", {
        "server": sandbox.url, "notification_type": "event-notification",
        "resources": [stray]}, key="stray")
    run(pas_services)
    [entry] = pas_services.quarantine.list()
    assert "matches no request" in entry.reason


def test_approval_moves_the_referral_on(pas_services: Services) -> None:
    item = next(i for i in DEMO if i["code"] not in ("306235009", "306241006"))
    referral = open_referral(pas_services, item)
    [request] = submit(pas_services, referral)
    assert request.status == "approved" and request.auth_number.startswith("SBX")
    assert pas_services.store.get(referral.id).stage == Stage.OUTREACH


def test_denial_holds_the_referral_with_the_reason(pas_services: Services) -> None:
    referral = open_referral(pas_services, demo_item("306241006"))  # -> 99244 deny
    [request] = submit(pas_services, referral)
    assert request.status == "denied"
    held = pas_services.store.get(referral.id)
    assert held.stage == Stage.ON_HOLD and held.status_reason is not None
    assert held.status_reason.code == "auth-denied"


def test_sent_bundle_passes_the_check_and_is_valid_r4(pas_services: Services) -> None:
    referral = open_referral(pas_services, demo_item("306235009"))
    [request] = submit(pas_services, referral)
    bundle = request.bundle_json()
    assert [f for f in check_bundle(bundle) if f.severity == "error"] == []
    Bundle.model_validate(bundle)  # fhir.resources R4B model: valid R4 structure


def test_5xx_and_timeouts_resend_the_identical_bundle(pas_services: Services,
                                                      sandbox: SandboxServer) -> None:
    sandbox.state.fail_next.extend([503, 500])
    referral = open_referral(pas_services, demo_item("306235009"))
    pas_services.adapters["pas"].enqueue_submit(referral.id, "Blue Horizon")
    worker = Worker(pas_services.work, all_handlers(pas_services))
    for _ in range(3):  # each failure backs off: make the item due again and rerun
        worker.run_once()
        with pas_services.db.write() as conn:
            from referrals.store.schema import work_items
            conn.execute(work_items.update().values(run_at=datetime.now(UTC)))
    [request] = PriorAuthStore(pas_services.db).for_referral(referral.id)
    assert sandbox.state.received == [hashlib.sha256(request.bundle).hexdigest()] * 3
    assert request.status == "pended"


def test_4xx_shows_the_operation_outcome_and_is_not_retried(pas_services: Services,
                                                            sandbox: SandboxServer) -> None:
    referral = open_referral(pas_services, demo_item("306235009"))
    pas_services.resources.put({**demo_resources(demo_item("306235009"))["Coverage"],
                                "subscriberId": "M1"}, server="demo")
    flow = pas_services.adapters["pas"]
    request, sendable = flow.prepare(pas_services.store.get(referral.id),
                                     flow.config.payer("Blue Horizon"))
    assert sendable
    broken = request.bundle_json()
    broken["entry"][0]["resource"]["use"] = "claim"  # the payer refuses it
    PriorAuthStore(pas_services.db).update(request.id, bundle=json.dumps(broken).encode())
    pas_services.work.enqueue("pas.submit", {"request_id": request.id}, key="x")
    run(pas_services)
    after = PriorAuthStore(pas_services.db).try_get(request.id)
    assert after is not None and after.status == "rejected"
    assert "Claim.use must be preauthorization" in after.last_error
    assert len(sandbox.state.received) == 1
    # the referral shows the refusal, why, and what to do next
    moved = pas_services.store.get(referral.id)
    assert (moved.stage, moved.auth_state) == (Stage.AUTH_PENDING, "rejected")
    reason = pas_services.store.events(referral.id)[-1].reason
    assert reason is not None and reason.code == "auth-rejected"
    assert reason.text.startswith("Blue Horizon refused the request (HTTP 400): correct what "
                                  "it names and request prior authorization again")
    assert "request prior authorization again" in after.last_error
    task = pas_services.resources.try_get("Task", request.task_id, server="local")
    assert task is not None and task["status"] == "failed"
    assert task["statusReason"]["text"] == after.last_error
    flow.enqueue_submit(referral.id, "Blue Horizon")  # requested again: a new request is sent
    run(pas_services)
    assert len(sandbox.state.received) == 2
    assert pas_services.store.get(referral.id).auth_state == "pended"


def test_missing_data_is_a_finding_not_a_crash(pas_services: Services) -> None:
    item = demo_item("306235009")
    referral = open_referral(pas_services, item)
    pas_services.resources.delete("Coverage", item["key"], server="demo")
    [request] = submit(pas_services, referral)
    assert request.status == "blocked"
    assert any(f["path"] == "Coverage" and f["severity"] == "error" for f in request.findings)
    assert pas_services.store.get(referral.id).stage == Stage.ACCEPTED


def test_update_adds_then_cancel_all(pas_services: Services, sandbox: SandboxServer) -> None:
    referral = open_referral(pas_services, next(
        i for i in DEMO if i["code"] not in ("306235009", "306241006")))
    [first] = submit(pas_services, referral)
    flow = pas_services.adapters["pas"]
    extra = first.bundle_json()["entry"][0]["resource"]["item"][0]
    update = flow.update(first.chain_id, add_items=[extra])
    run(pas_services)
    sent = PriorAuthStore(pas_services.db).try_get(update.id)
    assert sent is not None and sent.kind == "update" and sent.status == "approved"
    claim = sent.bundle_json()["entry"][0]["resource"]
    assert claim["status"] == "active" and claim["related"][0]["claim"]["reference"] == \
        first.claim_full_url
    assert [i["sequence"] for i in claim["item"]] == [1, 2]
    cancel = flow.update(first.chain_id, cancel_all=True)
    run(pas_services)
    done = PriorAuthStore(pas_services.db).try_get(cancel.id)
    assert done is not None and done.status == "cancelled"
    claim = done.bundle_json()["entry"][0]["resource"]
    assert claim["status"] == "active"
    assert [i["sequence"] for i in claim["item"]] == [1, 2]
    assert all(i["modifierExtension"][0]["valueBoolean"] for i in claim["item"])
    assert sandbox.state.claims[done.claim_identifier]["bundle"]["entry"][1]["fullUrl"] == \
        sent.claim_full_url
