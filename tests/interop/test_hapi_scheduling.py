"""Scheduling against the HAPI FHIR JPA server (interop/hapi) loaded with a Schedule and Slots:
booking (transaction: Slot busy with ifMatch + Appointment), the slot race with exactly one
winner, reschedule (the old Appointment cancelled and its Slot free again) and cancel. Refloop's
store is SQLite here: what is under test is HAPI's side of the booking."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "scheduling"))

from calendar_data import Calendar, create, destination, make_calendar

from referrals.model import Command, Referral, Stage, new_referral_id
from referrals.worker import Worker
from refloop.services import Services, build_services
from refloop.settings import Settings
from refloop.wiring import all_handlers
from scheduling.adapter import PATIENT


@pytest.fixture
def hapi_world(hapi_base_url: str, sqlite_url: str, tmp_path: Path
               ) -> Iterator[tuple[Services, Calendar]]:
    calendar = make_calendar(hapi_base_url, slots=4)
    services = build_services(Settings(
        var_dir=tmp_path / "var", database_url=sqlite_url,
        public_base_url="https://refloop.test",
        sections={"scheduling": {"destinations": [destination(calendar)]}}))
    yield services, calendar
    services.close()


def referral_on(services: Services, calendar: Calendar) -> Referral:
    """HAPI checks references: the ServiceRequest the Appointment is basedOn must exist."""
    patient = calendar.read(f"Patient/{calendar.patient}")
    services.resources.put(patient, server=calendar.base)
    sr = create(calendar.base, {"resourceType": "ServiceRequest", "status": "active",
                                "intent": "order",
                                "subject": {"reference": f"Patient/{calendar.patient}"}})
    draft = Referral(id=new_referral_id(),
                     source_key=f"fhir|{calendar.base}|ServiceRequest/{sr['id']}",
                     service_request=f"ServiceRequest/{sr['id']}",
                     patient=f"Patient/{calendar.patient}", specialty="cardiology")
    opened, _ = services.referrals.open(draft, Command("detect"))
    return services.referrals.act(opened.id, Command("accept"))


def release(services: Services) -> None:
    Worker(services.work, {"scheduling.release": all_handlers(services)[
        "scheduling.release"]}).drain()


def test_booking_on_hapi(hapi_world: Any) -> None:
    services, calendar = hapi_world
    scheduling = services.adapters["scheduling"]
    referral = referral_on(services, calendar)
    page = scheduling.booker.find(referral.id)
    assert [o.key for o in page.options] == calendar.slots
    assert page.options[0].clinician.startswith("Dr Eva Lindqvist-")
    row = scheduling.booker.book(referral.id, calendar.slots[1], PATIENT).booked
    assert row is not None
    appointment = calendar.read(f"Appointment/{row.appointment_id}")
    assert appointment["status"] == "booked"
    assert appointment["slot"] == [{"reference": calendar.slots[1]}]
    assert appointment["basedOn"] == [{"reference": referral.service_request}]
    assert calendar.read(calendar.slots[1])["status"] == "busy"
    assert services.store.get(referral.id).stage == Stage.SCHEDULED
    assert calendar.slots[1] not in [o.key for o in scheduling.booker.find(referral.id).options]


def test_slot_race_on_hapi_has_exactly_one_winner(hapi_world: Any) -> None:
    services, calendar = hapi_world
    scheduling = services.adapters["scheduling"]
    racers = [referral_on(services, calendar) for _ in range(2)]
    outcomes: dict[str, Any] = {}
    barrier = threading.Barrier(2)

    def attempt(referral_id: str) -> None:
        barrier.wait()
        outcomes[referral_id] = scheduling.booker.book(referral_id, calendar.slots[0], PATIENT)

    threads = [threading.Thread(target=attempt, args=(r.id,)) for r in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(bool(o.booked) for o in outcomes.values()) == [False, True]
    loser = next(o for o in outcomes.values() if not o.booked)
    assert loser.taken and loser.next_page.options[0].key == calendar.slots[1]
    booked = calendar.search(f"Appointment?slot={calendar.slots[0]}")
    assert len(booked) == 1
    assert sorted(services.store.get(r.id).stage.value for r in racers) == [
        "accepted", "scheduled"]


def test_reschedule_and_cancel_on_hapi(hapi_world: Any) -> None:
    services, calendar = hapi_world
    scheduling = services.adapters["scheduling"]
    referral = referral_on(services, calendar)
    first = scheduling.booker.book(referral.id, calendar.slots[0], PATIENT).booked
    second = scheduling.booker.book(referral.id, calendar.slots[3], PATIENT).booked
    release(services)
    assert calendar.read(f"Appointment/{first.appointment_id}")["status"] == "cancelled"
    assert calendar.read(calendar.slots[0])["status"] == "free"
    assert calendar.read(calendar.slots[3])["status"] == "busy"
    assert scheduling.book.current(referral.id).appointment_id == second.appointment_id
    scheduling.booker.cancel(referral.id, PATIENT, "cannot come")
    release(services)
    assert calendar.read(f"Appointment/{second.appointment_id}")["status"] == "cancelled"
    assert calendar.read(calendar.slots[3])["status"] == "free"
    assert services.store.get(referral.id).stage == Stage.APPOINTMENT_CANCELLED
