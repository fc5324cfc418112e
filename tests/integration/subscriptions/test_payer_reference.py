"""The payer of a Coverage that names it by reference only (`payor: [{"reference":
"Organization/x"}]`, the usual shape): the Organization is read with the ServiceRequest (the
notification's concurrent re-read and reconciliation alike) and its name becomes the payer."""

from __future__ import annotations

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


def coverage_by_reference(ehr: Any, kit: SimpleNamespace, patient_id: str) -> tuple[str, str]:
    payer = ehr.create({"resourceType": "Organization", "name": "Northwind Health Plan"})["id"]
    coverage = {**kit.coverage(patient_id), "payor": [{"reference": f"Organization/{payer}"}]}
    return payer, ehr.create(coverage)["id"]


def test_payer_name_from_the_referenced_organization(sekmet: Any, listener: Any,
                                                     kit: SimpleNamespace) -> None:
    services = listener.services
    adapter(services).register(sekmet.base)
    p = sekmet.create(kit.patient())["id"]
    d = sekmet.create(kit.practitioner())["id"]
    org, c = coverage_by_reference(sekmet, kit, p)
    sr = sekmet.create(kit.service_request(p, d, c))
    key = source_key(sekmet.base, sr["id"])
    worker = Worker(services.work, all_handlers(services))  # prepare(): concurrent re-reads
    referral = kit.wait_for(lambda: worker.drain() >= 0 and services.store.try_get_by_source(key),
                            15, "referral not created")
    assert referral.payer == "Northwind Health Plan"
    assert services.resources.try_get("Organization", org, server=sekmet.base) is not None

    # the same through reconciliation (the poll's page has no Coverage or Organization)
    sr2 = sekmet.create(kit.service_request(p, d, c, reason="Palpitations"))
    adapter(services).reconcile(sekmet.base)
    polled = services.store.try_get_by_source(source_key(sekmet.base, sr2["id"]))
    assert polled is not None and polled.payer == "Northwind Health Plan"
