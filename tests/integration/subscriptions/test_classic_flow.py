"""R4 classic and backport subscriptions on the real sekmet-fhir peer: registration,
notifications through Refloop's real endpoint, processing into referrals."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from referrals.worker import Worker
from refloop.services import Services
from refloop.wiring import all_handlers
from subscriptions.adapter import SubscriptionsAdapter
from subscriptions.mapping import source_key


def adapter(services: Services) -> SubscriptionsAdapter:
    found: SubscriptionsAdapter = services.adapters["subscriptions"]
    return found


def drain(services: Services) -> int:
    return Worker(services.work, all_handlers(services)).drain()


def inbox_total(services: Services) -> int:
    return sum(services.inbox.counts().values())


def seed(ehr: Any, kit: SimpleNamespace) -> tuple[str, str, str]:
    p = ehr.create(kit.patient())["id"]
    d = ehr.create(kit.practitioner())["id"]
    c = ehr.create(kit.coverage(p))["id"]
    return p, d, c


def test_classic_registration_and_referral(sekmet: Any, listener: Any,
        kit: SimpleNamespace) -> None:
    services = listener.services
    outcome = adapter(services).register(sekmet.base)
    assert (outcome.flavour, outcome.status, outcome.reused) == ("r4-classic", "active", False)
    sub = sekmet.read(f"Subscription/{outcome.subscription_id}")
    assert sub["channel"]["endpoint"].startswith(f"{services.settings.base_url}/hooks/")
    assert sub["criteria"] == "ServiceRequest?intent=order&category=http://snomed.info/sct|3457005"

    p, d, c = seed(sekmet, kit)
    before = inbox_total(services)
    sr = sekmet.create(kit.service_request(p, d, c))
    kit.wait_for(lambda: inbox_total(services) > before, 15, "no notification arrived")
    drain(services)
    referral = services.store.try_get_by_source(source_key(sekmet.base, sr["id"]))
    assert referral is not None
    assert (referral.patient, referral.requester, referral.priority) == \
        (f"Patient/{p}", f"Practitioner/{d}", "urgent")
    assert referral.reason_text == "Referral to cardiology service: Chest pain on exertion"
    assert referral.payer == "Acme Health Plan"
    assert referral.specialty == "Cardiology"
    assert services.resources.try_get("Coverage", c, server=sekmet.base) is not None
    health = adapter(services).registry.get(outcome.hook_id or "")
    assert health.notifications >= 1 and health.last_notification_at is not None

    again = adapter(services).register(sekmet.base)
    assert again.reused and again.subscription_id == outcome.subscription_id


def test_revocation_cancels_the_referral(sekmet: Any, listener: Any,
        kit: SimpleNamespace) -> None:
    services = listener.services
    adapter(services).register(sekmet.base)
    p, d, c = seed(sekmet, kit)
    sr = sekmet.create(kit.service_request(p, d, c))
    key = source_key(sekmet.base, sr["id"])
    kit.wait_for(lambda: drain(services) or services.store.try_get_by_source(key), 15,
             "referral not created")
    sekmet.update({**sr, "status": "revoked"})
    kit.wait_for(lambda: drain(services) or
             services.store.try_get_by_source(key).stage.value == "cancelled",  # type: ignore
             15, "referral not cancelled")
    events = services.store.events(services.store.try_get_by_source(key).id)  # type: ignore
    assert [e.action for e in events][-2:] == ["request-cancel", "cancel"]


def test_backport_registration_and_referral(sekmet: Any, listener: Any,
        kit: SimpleNamespace) -> None:
    services = listener.services
    subs = adapter(services)
    subs.servers = [subs.server(sekmet.base).__class__(base_url=sekmet.base,
                                                       flavour="r4-backport")]
    outcome = subs.register(sekmet.base)
    assert outcome.flavour == "r4-backport"
    assert outcome.status == "active"  # sekmet activates after our endpoint answers the handshake
    health = subs.registry.get(outcome.hook_id or "")
    assert health.last_notification_type == "handshake"
    assert "intent" in outcome.detail  # the topic cannot filter by intent; we check it ourselves

    p, d, c = seed(sekmet, kit)
    sr = sekmet.create(kit.service_request(p, d, c, priority="asap"))
    key = source_key(sekmet.base, sr["id"])
    kit.wait_for(lambda: drain(services) or services.store.try_get_by_source(key), 15,
             "backport notification did not become a referral")
    referral = services.store.try_get_by_source(key)
    assert referral is not None and referral.priority == "asap"
    assert (referral.patient, referral.requester) == (f"Patient/{p}", f"Practitioner/{d}")
    assert referral.reason_text == "Referral to cardiology service: Chest pain on exertion"
    time.sleep(0.2)
    health = subs.registry.get(outcome.hook_id or "")
    assert health.last_event_number == "1"


def test_delete_notification_fails_the_referral(sekmet: Any, listener: Any,
                                                kit: SimpleNamespace) -> None:
    """sekmet sends no DELETE notifications; the test sends the one HAPI sends
    (`DELETE {endpoint}/ServiceRequest/{id}`) after deleting the ServiceRequest on sekmet."""
    import requests

    services = listener.services
    outcome = adapter(services).register(sekmet.base)
    p, d, c = seed(sekmet, kit)
    sr = sekmet.create(kit.service_request(p, d, c))
    key = source_key(sekmet.base, sr["id"])
    kit.wait_for(lambda: drain(services) or services.store.try_get_by_source(key), 15,
                 "referral not created")
    assert requests.delete(f"{sekmet.base}/ServiceRequest/{sr['id']}", timeout=5).ok
    hook = adapter(services).registry.try_get_hook(outcome.hook_id or "")
    assert hook is not None
    # the secret is stored only as a hash: the sender's copy is in the Subscription's header
    header = sekmet.read(f"Subscription/{outcome.subscription_id}")["channel"]["header"][0]
    r = requests.delete(f"{hook.url}/ServiceRequest/{sr['id']}", timeout=5,
                        headers={"Authorization": header.partition(": ")[2]})
    assert r.status_code == 200
    drain(services)
    referral = services.store.try_get_by_source(key)
    assert referral is not None and referral.stage.value == "failed"
    assert referral.status_reason is not None
    assert referral.status_reason.code == "deleted-in-ehr"
