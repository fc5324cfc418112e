"""`refloop register` against the real HAPI FHIR JPA server (HAPI 8.8.0, R4): it chooses R4 classic
criteria, says why, and HAPI activates the Subscription (no handshake). And the reason it must not
choose the R4 backport on HAPI: HAPI R4 accepts a backport (topic) Subscription, activates it, and
never delivers anything to it (hapi-fhir-jpaserver-starter#964), proven here side by side with a
classic Subscription that does deliver."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from refloop.cli import main
from subscriptions.client import FhirClient
from subscriptions.discovery import Topic, read_facts
from subscriptions.registration import build_backport_subscription

DELIVERY_S = 30.0
QUIET_S = 5.0  # HAPI here delivers within ~1.5 s of a change (README); wait several times that


def test_register_chooses_r4_classic_and_says_why(hapi: Any, refloop_peer: Any,
                                                  patient_id: str, tmp_path: Path) -> None:
    peer = refloop_peer
    config = peer.write_config(tmp_path / "refloop.toml")
    runner = CliRunner()

    result = runner.invoke(main, ["--config", str(config), "register", "--fhir-base", hapi.base,
                                  "--json"])
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert (outcome["server"], outcome["flavour"], outcome["status"]) == \
        (hapi.base, "r4-classic", "active")
    assert "criteria" in outcome["why"] and "Subscription create" in outcome["why"]
    assert outcome["endpoint"] == f"{peer.base_url}/hooks/{outcome['hook_id']}"
    assert "secret" not in result.output.lower() and "bearer" not in result.output.lower()

    # What HAPI holds: classic criteria, rest-hook to our endpoint with the secret header, active.
    subscription = hapi.read(f"Subscription/{outcome['subscription_id']}")
    assert subscription["status"] == "active"
    assert subscription["criteria"] == f"ServiceRequest?intent=order&subject=Patient/{patient_id}" \
        "&category=http://snomed.info/sct|3457005"
    channel = subscription["channel"]
    assert (channel["type"], channel["endpoint"], channel["payload"]) == \
        ("rest-hook", outcome["endpoint"], "application/fhir+json")
    assert [h.split(":", 1)[0] for h in channel["header"]] == ["Authorization"]
    assert "meta" not in subscription or "profile" not in subscription["meta"]

    # The facts behind the choice, from HAPI's CapabilityStatement: Subscription create, and no
    # Subscriptions Backport support declared.
    facts = read_facts(FhirClient(hapi.base))
    assert (facts.fhir_version, facts.subscription_create, facts.backport, facts.topics) == \
        ("4.0.1", True, False, ())

    # The human form says the same, and a second run reuses the Subscription.
    result = runner.invoke(main, ["--config", str(config), "register", "--fhir-base", hapi.base])
    assert result.exit_code == 0, result.output
    assert f"{hapi.base}: r4-classic ({outcome['why']})" in result.output
    assert f"Subscription/{outcome['subscription_id']} status active (reused)" in result.output

    result = runner.invoke(main, ["--config", str(config), "subscriptions", "list", "--json"])
    rows = json.loads(result.stdout)
    assert [(r["server"], r["flavour"], r["status"], r["subscription_id"]) for r in rows] == \
        [(hapi.base, "r4-classic", "active", outcome["subscription_id"])]


def test_hapi_r4_accepts_topic_subscriptions_but_never_delivers(
        hapi: Any, refloop_peer: Any, patient_id: str) -> None:
    peer = refloop_peer
    classic = peer.adapter.register(hapi.base)
    assert classic.flavour == "r4-classic"
    hook = peer.adapter.registry.open_hook(server=hapi.base, purpose="probe",
                                           deliver_kind="subscriptions.referral",
                                           flavour="r4-backport")
    topic = Topic("http://hl7.org/fhir/uv/subscriptions-backport/SubscriptionTopic/"
                  "service-request", frozenset({"ServiceRequest"}),
                  frozenset({"create", "update"}))
    body = build_backport_subscription(hook, topic, [f"ServiceRequest?subject=Patient/"
                                                     f"{patient_id}"], content="full-resource")
    backport = hapi.create(body)  # accepted (201) ...
    assert hapi.wait_active(backport["id"])["status"] == "active"  # ... and activated

    sr = hapi.create({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                      "category": [{"coding": [{"system": "http://snomed.info/sct",
                                                "code": "3457005"}]}],  # a patient referral
                      "subject": {"reference": f"Patient/{patient_id}"}})
    peer.wait_for(lambda: peer.referral(hapi.base, sr["id"]), DELIVERY_S,
                  "the classic Subscription did not deliver")
    time.sleep(QUIET_S)
    hapi.update({**sr, "priority": "urgent"})
    peer.wait_for(lambda: (lambda r: r and r.priority == "urgent")(
        peer.referral(hapi.base, sr["id"])), DELIVERY_S, "the classic update did not arrive")
    time.sleep(QUIET_S)
    assert peer.seen("POST", f"/hooks/{hook.id}") == 0
    assert peer.seen("PUT", f"/hooks/{hook.id}") == 0
    assert peer.seen("PUT", f"/hooks/{classic.hook_id}/ServiceRequest/{sr['id']}") >= 2
    assert hapi.read(f"Subscription/{backport['id']}")["status"] == "active"
