"""Helpers of the scheduling tests: the World (services, calendar, Flask test client), opening
an accepted referral for a calendar's patient, building services for a destination, and the
outreach.message work items enqueued. (Imported by the tests under this module's own name, so it
never collides with another directory's conftest.)"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calendar_data import Calendar, destination

from referrals.model import Command, Referral, new_referral_id
from referrals.store.work import WorkQueue
from referrals.worker import Worker
from refloop.app import create_app
from refloop.services import Services, build_services
from refloop.settings import Settings
from refloop.wiring import all_handlers


@dataclass
class World:
    services: Services
    calendar: Calendar
    client: Any
    app: Any

    @property
    def scheduling(self) -> Any:
        return self.services.adapters["scheduling"]

    def referral(self, calendar: Calendar | None = None, specialty: str = "cardiology"
                 ) -> Referral:
        chosen = calendar or self.calendar
        return open_referral(self.services, chosen, specialty)

    def drain(self, *kinds: str) -> int:
        handlers = all_handlers(self.services)
        if kinds:
            handlers = {k: v for k, v in handlers.items() if k in kinds}
        return Worker(self.services.work, handlers).drain()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, base_url="https://refloop.test", **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.client.post(path, base_url="https://refloop.test", **kwargs)


def open_referral(services: Services, calendar: Calendar, specialty: str = "cardiology"
                  ) -> Referral:
    """A referral from the EHR, accepted, with the Patient the detection adapter stored."""
    patient = calendar.read(f"Patient/{calendar.patient}")
    services.resources.put(patient, server=calendar.base)
    sr = f"sr-{new_referral_id()[-8:]}"
    draft = Referral(id=new_referral_id(), source_key=f"fhir|{calendar.base}|ServiceRequest/{sr}",
                     service_request=f"ServiceRequest/{sr}",
                     patient=f"Patient/{calendar.patient}", specialty=specialty)
    referral, _ = services.referrals.open(draft, Command("detect"))
    return services.referrals.act(referral.id, Command("accept"))


def make_world(database_url: str, tmp_path: Path, calendar: Calendar,
               **extra: Any) -> tuple[Services, Any]:
    section = {"destinations": [destination(calendar, **extra.pop("destination", {}))],
               **extra}
    settings = Settings(var_dir=tmp_path / "var", database_url=database_url,
                        public_base_url="https://refloop.test",
                        sections={"scheduling": section})
    services = build_services(settings)
    return services, create_app(services)


def messages(work: WorkQueue, services: Services, purpose: str | None = None
             ) -> list[dict[str, Any]]:
    """The outreach.message work items enqueued, oldest first."""
    import sqlalchemy as sa

    from referrals.store.schema import work_items

    with services.db.read() as c:
        rows = c.execute(sa.select(work_items.c.payload, work_items.c.idempotency_key)
                         .where(work_items.c.kind == "outreach.message")
                         .order_by(work_items.c.id)).all()
    found = [dict(r.payload, key=r.idempotency_key) for r in rows]
    return [m for m in found if purpose is None or m["purpose"] == purpose]
