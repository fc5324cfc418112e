"""FHIR R5 servers: Refloop registers a native R5 topic-based Subscription on HAPI FHIR 8.8.0 in R5
mode (interop/hapi with the Spring profile r5), found through the server's SubscriptionTopic, and
turns HAPI's `subscription-notification` Bundles into referrals; a lab order never becomes one.

HAPI 8.8.0 (R5) activates the Subscription itself (no handshake), sends no heartbeats, offers no
`$status` or `$events`, and does not send R5 `parameter` headers: the registration uses
`hook_auth = "path"` (the unguessable hook path is the credential). The hook endpoint and the
re-reads are Refloop's real ones, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

TOPIC = "http://refloop.example/interop/SubscriptionTopic/servicerequest-changed"
SCT = "http://snomed.info/sct"


def r5_service_request(patient: str, category: str, display: str) -> dict[str, Any]:
    """An R5 ServiceRequest (code and reason are CodeableReferences in R5)."""
    return {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "priority": "urgent", "subject": {"reference": f"Patient/{patient}"},
            "category": [{"coding": [{"system": SCT, "code": category, "display": display}]}],
            "code": {"concept": {"text": "Referral to cardiology service"}},
            "reason": [{"concept": {"text": "Chest pain on exertion"}}]}


def test_r5_topic_subscription_detects_referrals_only(hapi_r5: Any, r5_refloop_peer: Any,
                                                      r5_patient_id: str) -> None:
    r5, refloop, patient = hapi_r5, r5_refloop_peer, r5_patient_id
    outcome = refloop.adapter.register(r5.base)
    assert (outcome.flavour, outcome.status) == ("r5-topic", "active"), outcome
    assert TOPIC in outcome.why and "R5" in outcome.why
    held = r5.read(f"Subscription/{outcome.subscription_id}")
    assert held["topic"] == TOPIC and held["endpoint"] == outcome.endpoint
    assert held["channelType"]["code"] == "rest-hook" and held["content"] == "id-only"
    assert {(f["filterParameter"], f["value"]) for f in held["filterBy"]} == {
        ("intent", "order"), ("subject", f"Patient/{patient}"),
        ("category", f"{SCT}|3457005")}

    lab = r5.create(r5_service_request(patient, "108252007", "Laboratory procedure"))
    referral_sr = r5.create(r5_service_request(patient, "3457005", "Patient referral"))
    referral = refloop.wait_for(lambda: refloop.referral(r5.base, referral_sr["id"]), 60,
                                "the R5 notification did not become a referral")
    assert (referral.patient, referral.priority) == (f"Patient/{patient}", "urgent")
    assert referral.reason_text == \
        "Referral to cardiology service: Chest pain on exertion"
    # HAPI filtered the lab order by category: and if it had not, Refloop would have
    refloop.adapter.reconcile(r5.base)
    assert refloop.referral(r5.base, lab["id"]) is None

    r5.update({**referral_sr, "priority": "stat"})
    refloop.wait_for(lambda: (refloop.referral(r5.base, referral_sr["id"]) or referral)
                     .priority == "stat", 60, "the R5 update was not followed")
    health = refloop.adapter.registry.get(outcome.hook_id or "")
    assert health.notifications >= 2 and health.last_notification_type == \
        "event-notification" and int(health.last_event_number or 0) >= 2
