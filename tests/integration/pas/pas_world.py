"""Fixtures shared by the reply, follow-up and coverage tests: services configured with one payer
(the payer sandbox or the other payer, payers.py), a clock the tests move, a referral opened and
accepted, the work drained. Test modules import the `world` fixture (world_fixture) from here:
this folder has no conftest.py, because the SMART tests import theirs as `conftest`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from payers import PayerUnderTest, start_payer

from pas_client.flow import PriorAuthFlow
from pas_client.store import PriorAuthRequest, PriorAuthStore
from referrals.model import Actor, Command, Referral, new_referral_id
from referrals.worker import Worker
from refloop.demo_data import demo_resources
from refloop.services import Services, build_services
from refloop.settings import Settings
from refloop.wiring import all_handlers

DEMO = json.loads((Path(__file__).resolve().parents[3] / "fixtures" / "demo" /
                   "referrals.json").read_text("utf-8"))
COORDINATOR = Actor("PractitionerRole/c1", "Casey", "human")
PAYER = "Blue Horizon"


class Clock:
    """The flow's clock: real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


@dataclass
class World:
    services: Services
    payer: PayerUnderTest
    clock: Clock

    @property
    def flow(self) -> PriorAuthFlow:
        found: PriorAuthFlow = self.services.adapters["pas"]
        return found

    @property
    def store(self) -> PriorAuthStore:
        return self.flow.store

    def run(self) -> int:
        return Worker(self.services.work, all_handlers(self.services)).drain()

    def referral(self, priority: str = "routine", index: int = 0,
                 accept: bool = True) -> Referral:
        item = {**DEMO[index], "priority": priority, "key": f"w-{new_referral_id()[-8:]}"}
        for resource in demo_resources(item).values():
            self.services.resources.put(resource, server="demo")
        draft = Referral(id=new_referral_id(), source_key=f"demo|ServiceRequest/{item['key']}",
                         service_request=f"ServiceRequest/{item['key']}",
                         patient=f"Patient/{item['key']}", priority=priority, payer=PAYER,
                         specialty=item["specialty"])
        referral, _ = self.services.referrals.open(draft, Command("detect", actor=COORDINATOR))
        if accept:
            referral = self.services.referrals.act(referral.id,
                                                   Command("accept", actor=COORDINATOR))
        return referral

    def submit(self, referral: Referral) -> PriorAuthRequest:
        self.flow.enqueue_submit(referral.id, PAYER)
        self.run()
        [request] = self.store.for_referral(referral.id)
        return request

    def request(self, request_id: str) -> PriorAuthRequest:
        found = self.store.try_get(request_id)
        assert found is not None
        return found

    def follow_up(self) -> None:
        """What the timer does every minute, then the work it queued."""
        self.flow.handle_follow_up(None)  # type: ignore[arg-type]
        self.run()


def payer_settings(tmp_path: Path, database_url: str, url: str,
                   **payer: Any) -> Settings:
    return Settings(var_dir=tmp_path / "var", database_url=database_url, sections={
        "pas": {"organization_name": "Refloop Clinic", "organization_npi": "1234567893",
                "organization_tin": "123456789"},
        "payers": [{"name": PAYER, "base_url": url, "payer_id": "BH0042", "version": "2.2.1",
                    "subscribe": False, "timeout_seconds": 5, **payer}]})


def make_world(kind: str, database_url: str, tmp_path: Path,
               configure: Callable[[str], dict[str, Any]] | None = None) -> World:
    """`configure(payer_url)` gives more of the payer's [[payers]] keys."""
    started = start_payer(kind)
    extra = configure(started.url) if configure else {}
    services = build_services(payer_settings(tmp_path, database_url, started.url, **extra))
    clock = Clock()
    services.adapters["pas"].now = clock
    return World(services, started, clock)


def close_world(world: World) -> None:
    world.services.close()
    world.payer.stop()


@pytest.fixture(params=["sandbox", "other"], name="world")
def world_fixture(request: pytest.FixtureRequest, database_url: str, tmp_path: Path
          ) -> Iterator[World]:
    made = make_world(request.param, database_url, tmp_path)
    yield made
    close_world(made)
