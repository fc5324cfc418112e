"""Helpers of the payer-authentication tests: settings naming a payer, a demo referral opened
and accepted, the work drained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pas_client.store import PriorAuthRequest, PriorAuthStore
from referrals.model import Actor, Command, Referral, new_referral_id
from referrals.worker import Worker
from refloop.demo_data import demo_resources
from refloop.services import Services
from refloop.settings import Settings
from refloop.wiring import all_handlers

DEMO = json.loads((Path(__file__).resolve().parents[3] / "fixtures" / "demo" /
                   "referrals.json").read_text("utf-8"))
COORDINATOR = Actor("PractitionerRole/c1", "Casey", "human")
PAYER = "Blue Horizon"


def pas_settings(tmp_path: Path, database_url: str, payer: dict[str, Any]) -> Settings:
    return Settings(var_dir=tmp_path / "var", database_url=database_url, sections={
        "pas": {"organization_name": "Refloop Clinic", "organization_npi": "1234567893",
                "organization_tin": "123456789"},
        "payers": [{"name": PAYER, "payer_id": "BH0042", "version": "2.2.1",
                    "subscribe": False, "timeout_seconds": 5, **payer}]})


def open_accepted(services: Services, index: int) -> Referral:
    item = DEMO[index]
    for resource in demo_resources(item).values():
        services.resources.put(resource, server="demo")
    draft = Referral(id=new_referral_id(), source_key=f"demo|ServiceRequest/{item['key']}",
                     service_request=f"ServiceRequest/{item['key']}",
                     patient=f"Patient/{item['key']}", priority=item["priority"], payer=PAYER)
    referral, _ = services.referrals.open(draft, Command("detect", actor=COORDINATOR))
    return services.referrals.act(referral.id, Command("accept", actor=COORDINATOR))


def submit(services: Services, referral: Referral) -> list[PriorAuthRequest]:
    services.adapters["pas"].enqueue_submit(referral.id, PAYER)
    Worker(services.work, all_handlers(services)).drain()
    return PriorAuthStore(services.db).for_referral(referral.id)
