"""A worker's batch of notifications: each ServiceRequest re-read from the EHR (sekmet-fhir) once
per batch, concurrently, applied in inbox order; a read never outlives its batch."""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from fhir_http.reply import Reply
from referrals.store.work import WorkItem
from referrals.worker import Worker
from refloop.services import Services
from refloop.wiring import all_handlers
from subscriptions.adapter import SubscriptionsAdapter
from subscriptions.client import FhirClient
from subscriptions.mapping import source_key
from subscriptions.registry import REFERRAL_KIND, Hook

NOTIFICATION = "subscriptions.notification"


def adapter(services: Services) -> SubscriptionsAdapter:
    found: SubscriptionsAdapter = services.adapters["subscriptions"]
    return found


def open_hook(services: Services, base: str) -> Hook:
    return adapter(services).registry.open_hook(
        server=base, purpose="referrals", deliver_kind=REFERRAL_KIND, flavour="r4-classic",
        criteria="ServiceRequest?intent=order", status="active")


def notify(services: Services, hook: Hook, resource: dict[str, Any]) -> None:
    """A classic rest-hook delivery (the resource as the body) through Refloop's endpoint."""
    from refloop.app import create_app

    client = create_app(services).test_client()
    reply = client.put(f"/hooks/{hook.id}/ServiceRequest/{resource['id']}",
                       data=json.dumps(resource),
                       headers={"Content-Type": "application/fhir+json",
                                "Authorization": f"Bearer {hook.secret}"})
    assert reply.status_code == 200, reply.data


def count_reads(monkeypatch: pytest.MonkeyPatch, client: FhirClient) -> Counter[str]:
    """ServiceRequest re-reads (`_id` searches) the client sends, by id."""
    reads: Counter[str] = Counter()
    real = client.send

    def send(method: str, path: str, **kwargs: Any) -> Reply:
        params = dict(kwargs.get("params") or [])
        if method == "GET" and path == "ServiceRequest" and "_id" in params:
            reads.update(params["_id"].split(","))  # one search may re-read several
            reads["searches"] += 1
        return real(method, path, **kwargs)

    monkeypatch.setattr(client, "send", send)
    return reads


@pytest.fixture
def ehr(sekmet: Any, listener_services: Services, kit: SimpleNamespace
        ) -> SimpleNamespace:
    p = sekmet.create(kit.patient())["id"]
    d = sekmet.create(kit.practitioner())["id"]
    c = sekmet.create(kit.coverage(p))["id"]
    return SimpleNamespace(peer=sekmet, hook=open_hook(listener_services, sekmet.base),
                           new_sr=lambda **kw: sekmet.create(kit.service_request(p, d, c, **kw)))


def test_a_batch_reads_each_service_request_once_and_applies_the_newest_version(
        listener_services: Services, ehr: SimpleNamespace,
        monkeypatch: pytest.MonkeyPatch) -> None:
    services = listener_services
    first, other = ehr.new_sr(priority="routine"), ehr.new_sr()
    notify(services, ehr.hook, first)
    notify(services, ehr.hook, other)
    newer = ehr.peer.update({**first, "priority": "stat"})
    notify(services, ehr.hook, newer)
    reads = count_reads(monkeypatch, adapter(services).client_for(ehr.peer.base))

    assert Worker(services.work, all_handlers(services), batch=10).run_once() == 3

    assert reads == {first["id"]: 1, other["id"]: 1, "searches": 1}  # one search for both
    referral = services.store.try_get_by_source(source_key(ehr.peer.base, first["id"]))
    assert referral is not None and referral.priority == "stat"
    assert [e.action for e in services.store.events(referral.id)] == ["detect"]
    assert services.work.counts() == {"done": 3}
    assert services.inbox.counts() == {"processed": 3}


def test_a_read_serves_only_its_batch(listener_services: Services, ehr: SimpleNamespace,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An item run again (a retry) after its batch was prepared reads the EHR again."""
    services = listener_services
    sr = ehr.new_sr(priority="routine")
    notify(services, ehr.hook, sr)
    handler = adapter(services).notifications
    items: list[WorkItem] = services.work.claim("test", kinds=[NOTIFICATION])
    handler.prepare(items)
    ehr.peer.update({**sr, "priority": "urgent"})
    handler.prepare([])  # the next batch: the earlier read is dropped
    reads = count_reads(monkeypatch, adapter(services).client_for(ehr.peer.base))

    handler(items[0])

    assert reads == {sr["id"]: 1, "searches": 1}
    referral = services.store.try_get_by_source(source_key(ehr.peer.base, sr["id"]))
    assert referral is not None and referral.priority == "urgent"


def test_one_search_reads_a_batch_with_coverages_and_payer_organizations(
        listener_services: Services, sekmet: Any, kit: SimpleNamespace,
        monkeypatch: pytest.MonkeyPatch) -> None:
    services = listener_services
    p = sekmet.create(kit.patient())["id"]
    d = sekmet.create(kit.practitioner())["id"]
    payer = sekmet.create({"resourceType": "Organization", "name": "Northwind Health Plan"})["id"]
    c = sekmet.create({**kit.coverage(p), "payor": [{"reference": f"Organization/{payer}"}]})["id"]
    hook = open_hook(services, sekmet.base)
    srs = [sekmet.create(kit.service_request(p, d, c, reason=f"reason {n}")) for n in range(3)]
    for sr in srs:
        notify(services, hook, sr)
    reads = count_reads(monkeypatch, adapter(services).client_for(sekmet.base))

    assert Worker(services.work, all_handlers(services), batch=10).run_once() == 3

    assert reads["searches"] == 1 and all(reads[sr["id"]] == 1 for sr in srs)
    for sr in srs:
        referral = services.store.try_get_by_source(source_key(sekmet.base, sr["id"]))
        assert referral is not None and referral.payer == "Northwind Health Plan"
    assert services.work.counts() == {"done": 3}
