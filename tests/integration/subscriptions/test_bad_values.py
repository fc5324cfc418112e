"""An EHR resource carrying characters FHIR forbids and PostgreSQL cannot store (U+0000, an
unpaired surrogate) opens its referral on both databases, the characters left out, instead of
failing at every retry on PostgreSQL and opening on SQLite."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from referrals.worker import Worker
from refloop.wiring import all_handlers
from subscriptions.adapter import SubscriptionsAdapter


def test_characters_no_store_holds_are_left_out_of_ehr_resources(
        listener: Any, kit: SimpleNamespace, tmp_path: Path) -> None:
    services = listener.services
    ehr = kit.start_sekmet(tmp_path / "ehr", validation={"inbound": "off"})
    try:
        subs: SubscriptionsAdapter = services.adapters["subscriptions"]
        subs.register(ehr.base)
        p = ehr.create(kit.patient(family="Nu\u0000ll"))["id"]
        d = ehr.create(kit.practitioner())["id"]
        sr = ehr.create({**kit.service_request(p, d),
                         "note": [{"text": "a\u0000b \ud800c"}]})
        kit.wait_for(lambda: services.inbox.counts().get("received"), 15,
                     "expected the notification")
        Worker(services.work, all_handlers(services)).drain()
        (found,) = [r for r in services.store.list(limit=10)
                    if r.source_key.endswith(f"ServiceRequest/{sr['id']}")]
        stored = services.resources.try_get("ServiceRequest", sr["id"], server=ehr.base)
        assert stored is not None and stored["note"] == [{"text": "ab \ufffdc"}]
        patient = services.resources.try_get("Patient", p, server=ehr.base)
        assert patient is not None and patient["name"][0]["family"] == "Null"
        assert services.quarantine.list() == []
        assert set(services.work.counts()) == {"done"}
        assert found.patient == f"Patient/{p}"
    finally:
        ehr.server.should_exit = True
        ehr.thread.join(timeout=10)
