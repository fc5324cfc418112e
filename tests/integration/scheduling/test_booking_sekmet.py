"""Booking on sekmet-fhir (the EHR peer) loaded with a Schedule and Slots, through the patient's
pages: the link, the date of birth, the slots, booking (Slot busy, Appointment booked on the
EHR, referral scheduled, confirmation with the .ics, reminders), the slot race with exactly one
winner, reschedule and cancel, a booking the process stopped before storing."""

from __future__ import annotations

import base64
import re
import threading
from datetime import UTC, datetime

import icalendar
import pytest
from sched_world import World, messages

from referrals.model import Actor, Stage
from scheduling.orphans import CHECK_AFTER

PATIENT = Actor("Patient/x", "patient", "human")


def sign_in(world: World, referral_id: str) -> None:
    url = world.scheduling.issue_booking_link(referral_id)
    assert url is not None and url.startswith("https://refloop.test/p/")
    token = url.rsplit("/", 1)[1]
    page = world.get(f"/p/{token}")
    assert page.status_code == 200
    assert b"date of birth" in page.data.lower()
    answer = world.post(f"/p/{token}", data={"day": "23", "month": "4", "year": "1961"})
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/p/home")
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Strict" in cookie
    assert token not in cookie


def csrf(page: bytes) -> str:
    found = re.search(rb'name="csrf_token" value="([^"]+)"', page)
    assert found is not None
    return found.group(1).decode()


def test_patient_books_a_slot_and_the_ehr_has_the_appointment(world: World) -> None:
    referral = world.referral()
    sign_in(world, referral.id)
    page = world.get("/p/home")
    assert page.status_code == 200
    body = page.data.decode()
    assert "Choose a time" in body and "Dr Eva Lindqvist" in body
    assert "Heart Clinic, 12 Elm Street" in body
    keys = re.findall(r'name="slot" value="([^"]+)"', body)
    assert keys == world.calendar.slots  # soonest first, every free slot of the calendar
    booked = world.post("/p/book", data={"slot": keys[1], "csrf_token": csrf(page.data)})
    assert booked.status_code == 303 and booked.headers["Location"].endswith("booked=1")

    slot = world.calendar.read(keys[1])
    assert slot["status"] == "busy"
    appointments = world.calendar.search(f"Appointment?slot={keys[1]}")
    assert len(appointments) == 1
    appointment = appointments[0]
    assert appointment["status"] == "booked"
    assert appointment["basedOn"] == [{"reference": referral.service_request}]
    actors = {p["actor"]["reference"] for p in appointment["participant"]}
    assert actors == {referral.patient, f"Practitioner/{world.calendar.practitioner}",
                      f"Location/{world.calendar.location}"}

    after = world.services.store.get(referral.id)
    assert after.stage == Stage.SCHEDULED
    assert [o.reference for o in after.outputs] == [f"Appointment/{appointment['id']}"]
    home = world.get("/p/home?booked=1").data.decode()
    assert "You are booked" in home and "Heart Clinic" in home

    [confirmation] = messages(world.services.work, world.services, "booking-confirmation")
    assert confirmation["referral_id"] == referral.id
    assert confirmation["params"]["link"].startswith("https://refloop.test/p/")
    assert confirmation["params"]["clinician"].startswith("Dr Eva Lindqvist-")
    [attachment] = confirmation["attachments"]
    assert attachment["content_type"].startswith("text/calendar")
    calendar = icalendar.Calendar.from_ical(base64.b64decode(attachment["content_b64"]))
    [event] = list(calendar.walk("VEVENT"))
    assert event.decoded("dtstart").astimezone(UTC) == world.calendar.starts[1]
    assert str(event["location"]) == "Heart Clinic, 12 Elm Street"
    rows = world.scheduling.reminders.of_appointment(
        world.scheduling.book.current(referral.id).id)
    assert [r["days_before"] for r in rows] == [7, 2, 1]
    assert all(r["status"] == "planned" for r in rows)


def test_two_patients_race_for_one_slot_and_exactly_one_wins(world: World) -> None:
    first, second = world.referral(), world.referral()
    key = world.calendar.slots[0]
    outcomes: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def attempt(referral_id: str) -> None:
        barrier.wait()
        outcomes[referral_id] = world.scheduling.booker.book(referral_id, key, PATIENT)

    threads = [threading.Thread(target=attempt, args=(r.id,)) for r in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    won = [rid for rid, o in outcomes.items() if o.booked is not None]
    lost = [o for o in outcomes.values() if o.taken]
    assert len(won) == 1 and len(lost) == 1
    assert key not in [option.key for option in lost[0].next_page.options]
    assert lost[0].next_page.options[0].key == world.calendar.slots[1]
    assert len(world.calendar.search(f"Appointment?slot={key}")) == 1
    stages = {r.id: world.services.store.get(r.id).stage for r in (first, second)}
    assert sorted(stages.values()) == [Stage.ACCEPTED, Stage.SCHEDULED]
    assert stages[won[0]] == Stage.SCHEDULED


def test_one_patient_booking_three_slots_at_once_keeps_one_appointment(world: World) -> None:
    """A double tap (or three buttons tapped quickly): every booking but the last committed is
    released on the calendar, so the patient holds one Appointment and one busy Slot."""
    referral = world.referral()
    keys = world.calendar.slots[:3]
    barrier = threading.Barrier(len(keys))

    def attempt(key: str) -> None:
        barrier.wait()
        world.scheduling.booker.book(referral.id, key, PATIENT)

    threads = [threading.Thread(target=attempt, args=(k,)) for k in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    world.drain("scheduling.release")
    current = world.scheduling.book.current(referral.id)
    assert current is not None
    booked = [a for k in keys for a in world.calendar.search(f"Appointment?slot={k}")
              if a["status"] == "booked"]
    assert [a["id"] for a in booked] == [current.appointment_id]
    busy = [k for k in keys if world.calendar.read(k)["status"] == "busy"]
    assert busy == current.slots


def test_reschedule_books_the_new_slot_and_frees_the_old_one(world: World) -> None:
    referral = world.referral()
    first = world.scheduling.booker.book(referral.id, world.calendar.slots[0], PATIENT).booked
    second = world.scheduling.booker.book(referral.id, world.calendar.slots[2], PATIENT).booked
    assert first is not None and second is not None
    world.drain("scheduling.release")
    old = world.calendar.read(f"Appointment/{first.appointment_id}")
    assert old["status"] == "cancelled"
    assert world.calendar.read(world.calendar.slots[0])["status"] == "free"
    assert world.calendar.read(world.calendar.slots[2])["status"] == "busy"
    assert world.services.store.get(referral.id).stage == Stage.SCHEDULED
    current = world.scheduling.book.current(referral.id)
    assert current is not None and current.appointment_id == second.appointment_id
    assert [m["purpose"] for m in messages(world.services.work, world.services)] == [
        "booking-confirmation", "reschedule-confirmation"]
    statuses = {r["status"] for r in world.scheduling.reminders.of_appointment(first.id)}
    assert statuses == {"cancelled"}


def test_confirmations_not_yet_sent_expire_when_the_time_changes_again(world: World) -> None:
    """Only the confirmation of the time the patient holds may still go out: one held back
    (quiet hours, the daily cap) for a replaced time expires, so outreach skips it."""
    referral = world.referral()
    rows = [world.scheduling.booker.book(referral.id, k, PATIENT).booked
            for k in world.calendar.slots[:3]]
    assert all(rows)
    sent = messages(world.services.work, world.services)
    assert [m["purpose"] for m in sent] == [
        "booking-confirmation", "reschedule-confirmation", "reschedule-confirmation"]
    expired = [datetime.fromisoformat(m["expires_at"]) <= datetime.now(UTC)
               if "expires_at" in m else False for m in sent]
    assert expired == [True, True, False]
    assert sent[2]["reply_context"] == f"scheduling:appointment:{rows[2].id}"


def test_cancel_from_the_link_goes_back_to_scheduling(world: World) -> None:
    referral = world.referral()
    sign_in(world, referral.id)
    booked = world.scheduling.booker.book(referral.id, world.calendar.slots[1], PATIENT).booked
    assert booked is not None
    page = world.get("/p/cancel")
    assert page.status_code == 200 and b"Cancel your appointment?" in page.data
    done = world.post("/p/cancel", data={"csrf_token": csrf(page.data)})
    assert done.status_code == 200 and b"cancelled" in done.data
    assert world.services.store.get(referral.id).stage == Stage.APPOINTMENT_CANCELLED
    world.drain("scheduling.release")
    assert world.calendar.read(f"Appointment/{booked.appointment_id}")["status"] == "cancelled"
    assert world.calendar.read(world.calendar.slots[1])["status"] == "free"
    [notice] = messages(world.services.work, world.services, "cancel-confirmation")
    assert notice["params"]["link"].startswith("https://refloop.test/p/")
    again = world.get("/p/home").data.decode()
    assert "Choose a time" in again and world.calendar.slots[1] in again
    assert datetime.now(UTC) < world.calendar.starts[1]


def book_then_stop(world: World, referral_id: str, key: str,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The calendar commits the booking and the process stops before storing it."""
    def stopped(*_args: object) -> None:
        raise RuntimeError("the process stopped")
    with monkeypatch.context() as patched:
        patched.setattr(world.scheduling.booker, "_commit", stopped)
        with pytest.raises(RuntimeError):
            world.scheduling.booker.book(referral_id, key, PATIENT)
    assert world.calendar.read(key)["status"] == "busy"
    assert world.scheduling.book.current(referral_id) is None


def run_checks(world: World) -> None:
    """The booking checks fall due after any booking in flight is over (minutes)."""
    world.services.work.clock = lambda: datetime.now(UTC) + CHECK_AFTER * 3
    world.drain("scheduling.check-booking", "scheduling.release")


def test_a_booking_stored_nowhere_then_another_slot_leaves_one_appointment(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    referral = world.referral()
    first, second = world.calendar.slots[:2]
    book_then_stop(world, referral.id, first, monkeypatch)
    kept = world.scheduling.booker.book(referral.id, second, PATIENT).booked
    assert kept is not None
    run_checks(world)
    booked = [a for k in (first, second) for a in world.calendar.search(
        f"Appointment?slot={k}") if a["status"] == "booked"]
    assert [a["id"] for a in booked] == [kept.appointment_id]
    assert world.calendar.read(first)["status"] == "free"
    assert world.scheduling.book.current(referral.id) == kept


def test_a_booking_stored_nowhere_is_adopted_when_the_patient_books_no_other(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    referral = world.referral()
    key = world.calendar.slots[0]
    book_then_stop(world, referral.id, key, monkeypatch)
    run_checks(world)
    current = world.scheduling.book.current(referral.id)
    [appointment] = world.calendar.search(f"Appointment?slot={key}")
    assert current is not None and current.appointment_id == appointment["id"]
    assert world.services.store.get(referral.id).stage == Stage.SCHEDULED
    assert [m["purpose"] for m in messages(world.services.work, world.services)] == [
        "booking-confirmation"]
