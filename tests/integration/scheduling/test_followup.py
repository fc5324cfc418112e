"""After the booking, on sekmet-fhir: reminders due and the C / R replies, the no-show (from the
EHR's Appointment status, from the poll after the grace period, and by the EHR's own
Subscription notification), the recovery ladder and the coordinator task after the second
no-show, a cancellation by the clinic, the waitlist backfill, and the preparation
questionnaire written to the EHR."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from calendar_data import Sekmet, create, make_calendar, put
from sched_world import World, make_world, messages, open_referral
from werkzeug.serving import make_server

from referrals.model import Stage
from referrals.store.work import WorkItem
from scheduling.adapter import PATIENT
from scheduling.coordinator import summary

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "scheduling"


def book(world: World, referral_id: str, n: int) -> Any:
    outcome = world.scheduling.booker.book(referral_id, world.calendar.slots[n], PATIENT)
    assert outcome.booked is not None
    return outcome.booked


def set_status(world: World, appointment_id: str, status: str) -> dict[str, Any]:
    body = world.calendar.read(f"Appointment/{appointment_id}")
    return put(world.calendar.base, {**body, "status": status})


def item(payload: dict[str, Any], kind: str = "scheduling.appointment") -> WorkItem:
    return WorkItem(0, kind, "test", payload, 1, 8, "test")


def test_reminder_then_reply_c_confirms_and_r_sends_a_new_link(world: World) -> None:
    referral = world.referral()
    row = book(world, referral.id, 0)
    due = [r["due_at"] for r in world.scheduling.reminders.of_appointment(row.id)]
    assert world.scheduling.send_due_reminders(due[0] + timedelta(minutes=1)) == 1
    [reminder] = messages(world.services.work, world.services, "reminder")
    assert reminder["reply_context"] == f"scheduling:appointment:{row.id}"
    assert reminder["params"]["link"].startswith("https://refloop.test/p/")
    assert "Heart Clinic" in reminder["params"]["location"]
    assert world.scheduling.send_due_reminders(due[0] + timedelta(minutes=2)) == 0
    reply = {"referral_id": referral.id, "patient": referral.patient, "text": "C",
             "channel": "sms", "received_at": datetime.now(UTC).isoformat(),
             "communication_id": "comm-1", "reply_context": reminder["reply_context"]}
    assert world.scheduling.handle_reply(reply) is True
    assert world.scheduling.book.current(referral.id).confirmed_at is not None
    assert world.scheduling.handle_reply({**reply, "text": "R", "communication_id": "c2"})
    [link] = messages(world.services.work, world.services, "booking-link")
    assert link["params"]["link"].startswith("https://refloop.test/p/")
    assert world.scheduling.handle_reply({**reply, "text": "what time is it"}) is False
    assert world.scheduling.handle_reply({**reply, "referral_id": "nope"}) is False


def test_replies_about_a_finished_referral_are_left_to_outreach(world: World) -> None:
    """An R (or C, or "cancel appointment") after the loop closed issues no link, changes
    nothing, and is not consumed: outreach answers it by its own rules (the referral is
    finished)."""
    import sqlalchemy as sa

    from referrals.model import Command
    from scheduling.tables import links

    referral = world.referral()
    book(world, referral.id, 0)
    world.services.referrals.act(referral.id, Command("close-loop"))

    def issued() -> int:
        with world.services.db.read() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(links)
                                 .where(links.c.referral_id == referral.id)).scalar_one())

    before = issued()
    reply = {"referral_id": referral.id, "patient": referral.patient, "text": "R",
             "channel": "sms", "received_at": datetime.now(UTC).isoformat(),
             "communication_id": "comm-9", "reply_context": ""}
    for text in ("R", "C", "cancel appointment"):
        assert world.scheduling.handle_reply({**reply, "text": text}) is False
    assert issued() == before
    assert messages(world.services.work, world.services, "booking-link") == []
    assert world.services.store.get(referral.id).stage == Stage.LOOP_CLOSED


def test_noshow_on_the_ehr_starts_recovery_and_a_second_one_a_coordinator_task(
        world: World) -> None:
    tasks = world.services.tasks
    assert world.scheduling.core.tasks is tasks  # the core's coordinator tasks
    referral = world.referral()
    row = book(world, referral.id, 0)
    missed = set_status(world, row.appointment_id, "noshow")
    world.scheduling.handle_appointment(item({"server": world.calendar.base,
                                              "resources": [missed]}))
    assert world.services.store.get(referral.id).stage == Stage.NO_SHOW
    assert {r["status"] for r in world.scheduling.reminders.of_appointment(row.id)} == \
        {"cancelled"}
    world.drain("scheduling.recovery")
    [recovery] = messages(world.services.work, world.services, "no-show-recovery")
    assert recovery["params"]["link"].startswith("https://refloop.test/p/")
    assert tasks.open_for(referral.id) == []
    second = book(world, referral.id, 1)
    world.scheduling.handle_appointment(item({"server": world.calendar.base, "events": [
        {"focus": f"{world.calendar.base}/Appointment/{second.appointment_id}"}],
        "resources": []}))  # id-only: nothing changed yet
    assert world.services.store.get(referral.id).stage == Stage.SCHEDULED
    set_status(world, second.appointment_id, "noshow")
    world.scheduling.handle_appointment(item({"server": world.calendar.base, "events": [
        {"focus": f"{world.calendar.base}/Appointment/{second.appointment_id}"}],
        "resources": []}))
    assert world.services.store.get(referral.id).stage == Stage.NO_SHOW
    world.drain("scheduling.noshow-task", "scheduling.recovery")
    [task] = tasks.open_for(referral.id)
    assert (task.kind, task.data, task.outcomes) == (
        "rebook-after-no-show", {"misses": 2}, ("rebooked", "unreachable", "declined"))
    world.drain("scheduling.noshow-task")
    assert len(tasks.for_referral(referral.id)) == 1  # opened once
    seen = summary(world.scheduling, referral.id)
    assert len(seen["no_shows"]) == 2


def test_the_patient_arriving_on_the_ehr_completes_the_visit(world: World) -> None:
    referral = world.referral()
    row = book(world, referral.id, 0)
    came = set_status(world, row.appointment_id, "arrived")
    world.scheduling.handle_appointment(item({"server": world.calendar.base,
                                              "resources": [came]}))
    assert world.services.store.get(referral.id).stage == Stage.VISIT_COMPLETED
    assert {r["status"] for r in world.scheduling.reminders.of_appointment(row.id)} <= \
        {"cancelled", "sent"}
    # the visit ending later changes nothing more
    done = set_status(world, row.appointment_id, "fulfilled")
    world.scheduling.handle_appointment(item({"server": world.calendar.base,
                                              "resources": [done]}))
    assert [e.action for e in world.services.store.events(referral.id)].count(
        "complete-visit") == 1


def test_the_poll_infers_a_noshow_after_the_grace_period(database_url: str, tmp_path: Path,
                                                         sekmet: Sekmet) -> None:
    past = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)
    calendar = make_calendar(sekmet.base, slots=2, first=past)
    services, _app = make_world(database_url, tmp_path, calendar, noshow_grace_minutes=60)
    try:
        scheduling = services.adapters["scheduling"]
        on_time, late = open_referral(services, calendar), open_referral(services, calendar)
        attended = scheduling.booker.book(on_time.id, calendar.slots[0], PATIENT).booked
        missed = scheduling.booker.book(late.id, calendar.slots[1], PATIENT).booked
        body = calendar.read(f"Appointment/{attended.appointment_id}")
        put(calendar.base, {**body, "status": "fulfilled"})
        assert scheduling.check_visits(datetime.now(UTC)) == 2
        assert services.store.get(on_time.id).stage == Stage.VISIT_COMPLETED
        after = services.store.get(late.id)
        assert after.stage == Stage.NO_SHOW
        [event] = [e for e in services.store.events(late.id) if e.action == "no-show"]
        assert event.reason is not None and event.reason.code == "no-check-in"
        assert scheduling.check_visits(datetime.now(UTC)) == 0  # checked, nothing left
        assert missed.appointment_id != attended.appointment_id
    finally:
        services.close()


def test_the_ehr_notifies_the_noshow_through_its_subscription(
        database_url: str, tmp_path: Path, sekmet: Sekmet) -> None:
    calendar = make_calendar(sekmet.base, slots=1)
    port_probe = make_server("127.0.0.1", 0, lambda e, s: [])
    port = port_probe.server_port
    port_probe.server_close()
    services, app = make_world(database_url, tmp_path, calendar)
    services.settings.__dict__  # noqa: B018 - settings are frozen; the hook URL uses base_url
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        scheduling = services.adapters["scheduling"]
        subs = services.adapters["subscriptions"]
        subs.registry.base_url = f"http://127.0.0.1:{port}"
        subscription_id = scheduling.subscribe(calendar.base)
        deadline = time.monotonic() + 20
        while calendar.read(f"Subscription/{subscription_id}")["status"] != "active":
            assert time.monotonic() < deadline, "the Subscription did not become active"
            time.sleep(0.1)
        referral = open_referral(services, calendar)
        row = scheduling.booker.book(referral.id, calendar.slots[0], PATIENT).booked
        body = calendar.read(f"Appointment/{row.appointment_id}")
        put(calendar.base, {**body, "status": "noshow"})
        from referrals.worker import Worker
        from refloop.wiring import all_handlers

        worker = Worker(services.work, all_handlers(services))
        deadline = time.monotonic() + 30
        while services.store.get(referral.id).stage != Stage.NO_SHOW:
            assert time.monotonic() < deadline, "no notification arrived"
            worker.drain()
            time.sleep(0.2)
        [event] = [e for e in services.store.events(referral.id) if e.action == "no-show"]
        assert event.source == "scheduling:calendar"
    finally:
        requests.delete(f"{calendar.base}/Subscription/{subscription_id}", timeout=10)
        server.shutdown()
        services.close()


def test_a_cancellation_by_the_clinic_goes_back_to_scheduling(world: World) -> None:
    referral = world.referral()
    row = book(world, referral.id, 2)
    cancelled = set_status(world, row.appointment_id, "cancelled")
    world.scheduling.handle_appointment(item({"server": world.calendar.base,
                                              "resources": [cancelled]}))
    assert world.services.store.get(referral.id).stage == Stage.APPOINTMENT_CANCELLED
    assert [m["purpose"] for m in messages(world.services.work, world.services)] == [
        "booking-confirmation", "cancel-confirmation"]


def test_waitlist_backfill_first_to_accept_wins_and_the_old_slot_is_released(
        world: World) -> None:
    early, waiting, also_waiting = world.referral(), world.referral(), world.referral()
    book(world, early.id, 0)
    later = book(world, waiting.id, 3)
    latest = book(world, also_waiting.id, 2)
    world.scheduling.waitlist.join(waiting.id, "cardiology", later.id, later.start)
    world.scheduling.waitlist.join(also_waiting.id, "cardiology", latest.id, latest.start)
    world.scheduling.booker.cancel(early.id, PATIENT, "cannot come")
    world.drain("scheduling.release")
    offers = messages(world.services.work, world.services, "waitlist-offer")
    assert sorted(o["referral_id"] for o in offers) == sorted([waiting.id, also_waiting.id])
    first = next(o for o in offers if o["referral_id"] == also_waiting.id)
    second = next(o for o in offers if o["referral_id"] == waiting.id)
    yes = {"text": "YES", "channel": "sms", "received_at": datetime.now(UTC).isoformat()}
    assert world.scheduling.handle_reply({**yes, "referral_id": also_waiting.id,
                                         "communication_id": "y1",
                                         "reply_context": first["reply_context"]})
    world.drain("scheduling.release")
    moved = world.scheduling.book.current(also_waiting.id)
    assert moved.slots == [world.calendar.slots[0]]
    assert world.calendar.read(f"Appointment/{latest.appointment_id}")["status"] == "cancelled"
    assert world.calendar.read(world.calendar.slots[2])["status"] == "free"
    offer_id = second["reply_context"].rsplit(":", 1)[1]
    assert world.scheduling.take_offer(waiting.id, offer_id, PATIENT) is False
    assert world.scheduling.book.current(waiting.id).id == later.id
    assert len(world.calendar.search(f"Appointment?slot={world.calendar.slots[0]}&"
                                     "status=booked")) == 1


def test_preparation_questionnaire_is_answered_written_to_the_ehr_and_attached(
        database_url: str, tmp_path: Path, sekmet: Sekmet) -> None:
    calendar = make_calendar(sekmet.base, slots=1, language="es")
    services, app = make_world(
        database_url, tmp_path, calendar, destination={"preparation": "colonoscopy"},
        preparation={"colonoscopy": {
            "questionnaire": str(FIXTURES / "colonoscopy-intake.json"),
            "instructions_en": "Clear liquids only the day before.",
            "instructions_es": "Solo líquidos claros el día anterior.",
            "reminder_days": [3]}})
    try:
        client = app.test_client()
        scheduling = services.adapters["scheduling"]
        referral = open_referral(services, calendar)
        row = scheduling.booker.book(referral.id, calendar.slots[0], PATIENT).booked
        kinds = {(r["kind"], r["days_before"]) for r in scheduling.reminders.of_appointment(row.id)}
        assert ("preparation", 3) in kinds
        token = scheduling.issue_booking_link(referral.id).rsplit("/", 1)[1]
        https = {"base_url": "https://refloop.test"}
        client.post(f"/p/{token}", data={"day": "23", "month": "4", "year": "1961"}, **https)
        home = client.get("/p/home", **https).data.decode()
        assert "Solo líquidos claros" in home and 'lang="es"' in home
        page = client.get("/p/prepare", **https).data.decode()
        assert "¿Toma un anticoagulante?" in page
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        missing = client.post("/p/prepare", data={"csrf_token": csrf, "q-thinners": "yes"},
                              **https)
        assert missing.status_code == 400 and "¿Tiene diabetes?" in missing.data.decode()
        done = client.post("/p/prepare", data={"csrf_token": csrf, "q-thinners": "yes",
                                               "q-diabetes": "false", "q-driver": "Mi hija"},
                           **https)
        assert done.status_code == 200
        after = services.store.get(referral.id)
        [link] = [o for o in after.outputs if o.type == "QuestionnaireResponse"]
        from referrals.worker import Worker
        from refloop.wiring import all_handlers

        Worker(services.work, {"scheduling.answers": all_handlers(services)[
            "scheduling.answers"]}).drain()
        qid = link.reference.rsplit("/", 1)[1]
        stored = calendar.read(f"QuestionnaireResponse/{qid}")
        assert stored["identifier"]["value"] == qid
        assert stored["subject"]["reference"] == referral.patient
        assert [i["linkId"] for i in stored["item"]] == ["thinners", "diabetes", "driver"]
        answers = summary(scheduling, referral.id)["answers"]
        assert {"question": "¿Tiene diabetes?", "answer": "no"} in answers
    finally:
        services.close()


def test_a_cancellation_seen_on_the_ehr_offers_the_slot_to_the_waitlist(world: World) -> None:
    waiting = world.referral()
    later = book(world, waiting.id, 3)
    world.scheduling.waitlist.join(waiting.id, "cardiology", later.id, later.start)
    slot = world.calendar.read(world.calendar.slots[0])
    theirs = create(world.calendar.base, {  # booked at the clinic, not through Refloop
        "resourceType": "Appointment", "status": "booked",
        "slot": [{"reference": world.calendar.slots[0]}], "start": slot["start"],
        "end": slot["end"], "participant": [{"actor": {"reference": "Patient/someone"},
                                             "status": "accepted"}]})
    put(world.calendar.base, {**slot, "status": "busy"})
    cancelled = put(world.calendar.base, {**theirs, "status": "cancelled"})
    busy = world.calendar.read(world.calendar.slots[0])
    put(world.calendar.base, {**busy, "status": "free"})
    world.scheduling.handle_appointment(item({"server": world.calendar.base,
                                              "resources": [cancelled]}))
    [offer] = messages(world.services.work, world.services, "waitlist-offer")
    assert offer["referral_id"] == waiting.id
    assert offer["reply_context"].startswith("scheduling:offer:")
    assert "?offer=" in offer["params"]["link"]
