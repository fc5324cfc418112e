"""Detection against the real HAPI FHIR JPA server (interop/hapi, HAPI 8.8.0, R4): ServiceRequests
created on HAPI become referrals through HAPI's own rest-hook delivery
(`PUT {endpoint}/ServiceRequest/{id}` with `If-Match`) to Refloop's real `/hooks/<id>` endpoint;
updates and a revocation move the referral; with HAPI's send-delete extension a delete ends it.
Both databases (SQLite, PostgreSQL)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from referrals.model import Stage
from referrals.store.schema import inbox

DELIVERY_S = 30.0


def stored_headers(peer: Any, sr_id: str) -> list[dict[str, Any]]:
    with peer.services.db.read() as c:
        rows = c.execute(sa.select(inbox.c.headers, inbox.c.body)).all()
    return [dict(h) for h, body in rows if f'"id":"{sr_id}"' in bytes(body).decode()]


def test_service_request_becomes_referral_and_follows_updates_and_revocation(
        hapi: Any, refloop_peer: Any, orders: Any) -> None:
    peer = refloop_peer
    outcome = peer.adapter.register(hapi.base)
    assert (outcome.flavour, outcome.status) == ("r4-classic", "active")
    patient_id, practitioner_id, coverage_id = \
        orders.patient_id, orders.practitioner_id, orders.coverage_id

    sr = orders.create()
    referral = peer.wait_for(lambda: peer.referral(hapi.base, sr["id"]), DELIVERY_S,
                             "HAPI's notification did not become a referral")
    hook_path = f"/hooks/{outcome.hook_id}/ServiceRequest/{sr['id']}"
    assert peer.seen("PUT", hook_path) >= 1  # HAPI's classic rest-hook shape, answered 200
    headers = stored_headers(peer, sr["id"])
    assert headers and {k.lower(): v for k, v in headers[0].items()}["if-match"] == 'W/"1"'
    assert referral.stage == Stage.DETECTED
    assert (referral.patient, referral.requester, referral.priority) == \
        (f"Patient/{patient_id}", f"Practitioner/{practitioner_id}", "routine")
    assert referral.reason_text == "Referral to cardiology service: Chest pain on exertion"
    assert (referral.specialty, referral.payer) == ("Cardiology", "Acme Health Plan")
    assert referral.service_request == f"ServiceRequest/{sr['id']}"
    assert peer.services.resources.try_get("Coverage", coverage_id, server=hapi.base)

    updated = hapi.update({**sr, "priority": "urgent", "reasonCode": [{"text": "Syncope"}]})
    assert updated["meta"]["versionId"] == "2"
    referral = peer.wait_for(
        lambda: (lambda r: r if r.priority == "urgent" else None)(
            peer.referral(hapi.base, sr["id"])), DELIVERY_S, "the update did not arrive")
    assert referral.reason_text == "Referral to cardiology service: Syncope"
    assert peer.actions(referral.id) == ["detect", "amend"]

    hapi.update({**updated, "status": "revoked"})
    referral = peer.wait_for(
        lambda: (lambda r: r if r.stage == Stage.CANCELLED else None)(
            peer.referral(hapi.base, sr["id"])), DELIVERY_S, "the revocation did not arrive")
    assert peer.actions(referral.id) == ["detect", "amend", "request-cancel", "cancel"]
    assert referral.status_reason is not None and referral.status_reason.code == "revoked-in-ehr"
    assert len(peer.referrals_of(hapi.base)) == 1


def test_delete_with_send_delete_extension_ends_the_referral(
        hapi: Any, refloop_peer: Any, orders: Any) -> None:
    peer = refloop_peer
    outcome = peer.adapter.register(hapi.base)
    subscription = hapi.set_send_delete(outcome.subscription_id)
    # Changing the channel kept our endpoint and secret header; HAPI re-activated it.
    assert subscription["channel"]["endpoint"] == f"{peer.base_url}/hooks/{outcome.hook_id}"
    sr = orders.create()
    referral = peer.wait_for(lambda: peer.referral(hapi.base, sr["id"]), DELIVERY_S,
                             "HAPI's notification did not become a referral")

    hapi.delete(f"ServiceRequest/{sr['id']}")
    referral = peer.wait_for(
        lambda: (lambda r: r if r.stage == Stage.FAILED else None)(
            peer.referral(hapi.base, sr["id"])), DELIVERY_S, "the delete did not end it")
    assert peer.seen("DELETE", f"/hooks/{outcome.hook_id}/ServiceRequest/{sr['id']}") >= 1
    assert peer.actions(referral.id) == ["detect", "fail"]
    assert referral.status_reason is not None and referral.status_reason.code == "deleted-in-ehr"
    assert peer.services.resources.try_get("ServiceRequest", sr["id"], server=hapi.base) \
        is None
