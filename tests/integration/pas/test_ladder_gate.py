"""The outreach ladder waits for authorization only when it is required: with ladders starting
at acceptance, a referral whose authorization the coverage table requires starts its ladder when
it is authorized (here by the OTHER PAYER, a fake written for the tests: a payer cannot run
here), and one that needs no authorization starts at acceptance. On SQLite and PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from referrals.model import Command, Stage
from refloop.services import build_services
from refloop.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pas_world import COORDINATOR, DEMO, PAYER, Clock, World
from payers import start_payer


@pytest.fixture
def gated(database_url: str, tmp_path: Path) -> Iterator[World]:
    payer = start_payer("other")
    settings = Settings(var_dir=tmp_path / "var", database_url=database_url, sections={
        "pas": {"organization_name": "Refloop Clinic", "organization_npi": "1234567893",
                "organization_tin": "123456789"},
        "payers": [{"name": PAYER, "base_url": payer.url, "payer_id": "BH0042",
                    "subscribe": False, "timeout_seconds": 5,
                    "coverage_rules": [{"specialties": ["cardiology"],
                                        "authorization": "required"}],
                    "default_authorization": "not-required"}],
        "outreach": {"enabled": True, "practice_name": "Refloop Clinic",
                     "start_on": "accepted"}})
    services = build_services(settings)
    world = World(services, payer, Clock())
    yield world
    services.close()
    payer.stop()


def plans(world: World, referral_id: str) -> list[Any]:
    found: list[Any] = world.services.adapters["outreach"].ostore.plans_for(referral_id)
    return found


def test_a_referral_that_needs_authorization_starts_its_ladder_once_authorized(
        gated: World) -> None:
    referral = gated.referral(index=0, accept=False)          # cardiology: required
    gated.run()
    gated.services.referrals.act(referral.id, Command("accept", actor=COORDINATOR))
    gated.run()
    assert gated.services.store.get(referral.id).stage == Stage.AUTH_PENDING
    assert plans(gated, referral.id) == []                    # the ladder waits
    gated.flow.enqueue_submit(referral.id, PAYER)             # the payer approves (A1)
    gated.run()
    assert gated.services.store.get(referral.id).stage == Stage.OUTREACH
    [plan] = plans(gated, referral.id)
    assert plan.status in ("active", "completed")


def test_a_referral_that_needs_none_starts_its_ladder_at_acceptance(gated: World) -> None:
    index = next(n for n, item in enumerate(DEMO) if item["specialty"] != "cardiology")
    referral = gated.referral(index=index, accept=False)
    gated.run()
    gated.services.referrals.act(referral.id, Command("accept", actor=COORDINATOR))
    gated.run()
    held = gated.services.store.get(referral.id)
    assert held.stage == Stage.ACCEPTED and held.auth_state == "not-required"
    assert len(plans(gated, referral.id)) == 1
