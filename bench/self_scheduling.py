"""Scheduling benchmarks.

1. The patient's slot page with 50,000 free slots on the EHR (sekmet-fhir in process, 25
   practitioners' Schedules, loaded by transaction bundles): the real page (`GET /p/slots`
   through the Flask app: session, the Slot search on the EHR, the template), p50 and p95,
   against the bare FHIR search the page makes (the same `Slot?schedule=...&status=free&start=
   gt...&start=lt...&_sort=start&_count=7` straight to the server, over a one-day window, the
   page's first search), timed in alternating rounds in the same run, at random points of
   the 120-day horizon. Also, for a few rounds: the search a client asking the server to sort
   the whole calendar would make (`_sort=start&_count=7`, no end), which the page avoids.
2. Reminder planning for 100,000 booked appointments (`refloop scheduling replan`: read the
   appointments in batches, plan each ladder, write the steps), against a bare executemany
   insert of the same number of reminder rows, same database, same run.

    .venv/bin/python bench/self_scheduling.py [--slots 50000] [--appointments 100000]
        [--rounds 60] [--database sqlite|postgresql]

PostgreSQL comes from REFLOOP_TEST_POSTGRES_URL (a scratch database is created and dropped).
Prints `metric: value unit` lines and the ratios.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

# this file's name is the package's: bench/ goes last on the path, so `scheduling` is the package
sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests" / "integration"
                       / "scheduling"))
sys.path.append(str(Path(__file__).resolve().parent))
from calendar_data import FHIR, create, start_sekmet
from scratch import scratch_postgres

from referrals.model import Command, Referral, new_referral_id
from referrals.store import connect
from referrals.store.migrate import upgrade
from referrals.store.schema import referrals
from refloop.app import create_app
from refloop.services import build_services
from refloop.settings import Settings
from scheduling.config import from_section
from scheduling.replan import replan
from scheduling.tables import appointments, reminders

PRACTITIONERS = 25
WARM = 2


def line(metric: str, value: float, unit: str) -> None:
    print(f"{metric}: {value:.2f} {unit}", flush=True)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


@contextmanager
def database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "postgresql":
        server = os.environ.get("REFLOOP_TEST_POSTGRES_URL", "")
        if not server:
            sys.exit("set REFLOOP_TEST_POSTGRES_URL for --database postgresql")
        with scratch_postgres(server, "bench_sched") as url:
            db = connect(url)
            upgrade(db)
            db.dispose()
            yield url
        return
    url = f"sqlite:///{tmp / 'refloop.db'}"
    db = connect(url)
    upgrade(db)
    db.dispose()
    yield url


# -- 1. the slot page ----------------------------------------------------------------------------

def load_slots(base: str, total: int) -> tuple[list[str], str, datetime]:
    """PRACTITIONERS Schedules sharing `total` free 20-minute slots over 120 days."""
    patient = create(base, {"resourceType": "Patient", "birthDate": "1961-04-23",
                            "name": [{"family": "Bench", "given": ["Pat"]}]})
    location = create(base, {"resourceType": "Location", "name": "Bench Clinic"})
    actors, schedules = [], []
    for n in range(PRACTITIONERS):
        practitioner = create(base, {"resourceType": "Practitioner",
                                     "name": [{"family": f"Doctor{n}"}]})
        actors.append(f"Practitioner/{practitioner['id']}")
        schedules.append(create(base, {
            "resourceType": "Schedule", "active": True,
            "actor": [{"reference": actors[-1]}, {"reference": f"Location/{location['id']}"}]}))
    first = (datetime.now(UTC) + timedelta(days=1)).replace(hour=13, minute=0, second=0,
                                                            microsecond=0)
    per_schedule = total // PRACTITIONERS
    per_day = max(1, per_schedule // 120)
    started = time.perf_counter()
    entries: list[dict[str, Any]] = []
    made = 0
    for s, schedule in enumerate(schedules):
        for k in range(per_schedule):
            day, index = divmod(k, per_day)
            begin = first + timedelta(days=day, minutes=20 * index + s % 3)
            entries.append({"resource": {
                "resourceType": "Slot", "schedule": {"reference": f"Schedule/{schedule['id']}"},
                "status": "free", "start": begin.isoformat().replace("+00:00", "Z"),
                "end": (begin + timedelta(minutes=20)).isoformat().replace("+00:00", "Z")},
                "request": {"method": "POST", "url": "Slot"}})
            if len(entries) == 1000:
                made += post_bundle(base, entries)
                entries = []
                print(f"  loaded {made} slots", file=sys.stderr, flush=True)
    made += post_bundle(base, entries)
    line("slots_loaded", made, "slots")
    line("slot_load_rate", made / (time.perf_counter() - started), "slots/s")
    return actors, patient["id"], first


def post_bundle(base: str, entries: list[dict[str, Any]]) -> int:
    if not entries:
        return 0
    r = requests.post(base, json={"resourceType": "Bundle", "type": "transaction",
                                  "entry": entries}, headers=FHIR, timeout=600)
    r.raise_for_status()
    return len(entries)


def bench_slot_page(kind: str, tmp: Path, total: int, rounds: int, naive_rounds: int) -> None:
    (tmp / "ehr").mkdir(parents=True)
    peer = start_sekmet(tmp / "ehr")
    try:
        actors, patient_id, first = load_slots(peer.base, total)
        with database(kind, tmp) as url:
            section = {"slots_per_page": 6, "session_minutes": 600,
                       "http_timeout_seconds": 300, "destinations": [{
                "name": "bench", "specialties": ["cardiology"], "fhir_base": peer.base,
                "schedule_actors": actors, "time_zone": "America/Chicago",
                "subscribe": False}]}
            services = build_services(Settings(var_dir=tmp / "var", database_url=url,
                                               public_base_url="https://refloop.test",
                                               sections={"scheduling": section}))
            try:
                measure_pages(services, peer.base, patient_id, first, rounds, naive_rounds)
            finally:
                services.close()
    finally:
        peer.stop()


def measure_pages(services: Any, base: str, patient_id: str, first: datetime,
                  rounds: int, naive_rounds: int) -> None:
    patient = requests.get(f"{base}/Patient/{patient_id}", timeout=10).json()
    services.resources.put(patient, server=base)
    draft = Referral(id=new_referral_id(), source_key=f"fhir|{base}|ServiceRequest/b1",
                     service_request="ServiceRequest/b1", patient=f"Patient/{patient_id}",
                     specialty="cardiology")
    referral = services.referrals.act(services.referrals.open(draft, Command("detect"))[0].id,
                                      Command("accept"))
    scheduling = services.adapters["scheduling"]
    source = scheduling.sources.for_destination(scheduling.config.destinations[0])
    schedules = ",".join(f"Schedule/{s}" for s in sorted(source.schedules()))
    client = create_app(services).test_client()
    token = scheduling.issue_booking_link(referral.id).rsplit("/", 1)[1]
    https = {"base_url": "https://refloop.test"}
    client.post(f"/p/{token}", data={"day": "23", "month": "4", "year": "1961"}, **https)
    bare_session = requests.Session()
    page_ms, bare_ms = [], []
    rng = random.Random(7)
    for n in range(rounds + WARM):
        if n % 5 == 0:
            print(f"  round {n} of {rounds + WARM}", file=sys.stderr, flush=True)
        after = first + timedelta(minutes=rng.randrange(0, 110 * 24 * 60))
        day = after + timedelta(days=1)
        order = ("page", "bare") if n % 2 else ("bare", "page")
        for which in order:
            started = time.perf_counter()
            if which == "page":
                page = client.get("/p/slots", query_string={"after": after.isoformat()},
                                  **https)
                assert page.status_code == 200 and page.data.count(b'name="slot"') == 6, \
                    page.status_code
                elapsed = page_ms
            else:
                reply = bare_session.get(f"{base}/Slot", params=[
                    ("schedule", schedules), ("status", "free"),
                    ("start", f"gt{after.isoformat().replace('+00:00', 'Z')}"),
                    ("start", f"lt{day.isoformat().replace('+00:00', 'Z')}"),
                    ("_sort", "start"), ("_count", "7")],
                    headers={"Accept": "application/fhir+json", "Cache-Control": "no-cache"},
                    timeout=300)
                assert reply.status_code == 200 and len(reply.json().get("entry", [])) >= 7
                elapsed = bare_ms
            if n >= WARM:  # the first rounds warm caches and connections
                elapsed.append((time.perf_counter() - started) * 1000)
    line("slot_page_p50", statistics.median(page_ms), "ms")
    line("slot_page_p95", percentile(page_ms, 0.95), "ms")
    line("bare_slot_search_p50", statistics.median(bare_ms), "ms")
    line("bare_slot_search_p95", percentile(bare_ms, 0.95), "ms")
    line("slot_page_over_bare_p50", statistics.median(page_ms) / statistics.median(bare_ms),
         "x")
    line("slot_page_over_bare_p95",
         percentile(page_ms, 0.95) / percentile(bare_ms, 0.95), "x")
    line("slot_page_overhead_p50", statistics.median(page_ms) - statistics.median(bare_ms),
         "ms")
    naive_ms = []
    for n in range(naive_rounds):  # what a client asking the server to sort would wait
        after = first + timedelta(days=10 * n + 3)
        started = time.perf_counter()
        reply = bare_session.get(f"{base}/Slot", params=[
            ("schedule", schedules), ("status", "free"),
            ("start", f"gt{after.isoformat().replace('+00:00', 'Z')}"),
            ("_sort", "start"), ("_count", "7")],
            headers={"Accept": "application/fhir+json", "Cache-Control": "no-cache"},
            timeout=600)
        assert reply.status_code == 200
        naive_ms.append((time.perf_counter() - started) * 1000)
    if naive_ms:
        line("sorted_search_whole_calendar_p50", statistics.median(naive_ms), "ms")
        line("slot_page_over_sorted_search_p50",
             statistics.median(page_ms) / statistics.median(naive_ms), "x")


# -- 2. reminder planning ------------------------------------------------------------------------

def bench_reminders(kind: str, tmp: Path, count: int) -> None:
    tmp.mkdir(parents=True)
    with database(kind, tmp) as url:
        db = connect(url)
        try:
            config = from_section({"reminders_by_specialty": {"gastroenterology": [10, 3, 1]},
                                   "destinations": [{"name": "b", "specialties": ["x"],
                                                     "fhir_base": "http://e.invalid/fhir"}]})
            now = datetime.now(UTC)
            ids = load_appointments(db, count, now)
            rows = len(ids) * 3
            rng = random.Random(3)
            baseline = [{"appointment": ids[rng.randrange(len(ids))],
                         "referral_id": "r", "kind": "baseline", "days_before": n,
                         "due_at": now + timedelta(days=1), "status": "planned"}
                        for n in range(rows)]
            started = time.perf_counter()
            with db.write() as conn:
                for i in range(0, rows, 2000):
                    conn.execute(reminders.insert(), baseline[i:i + 2000])
            bare = time.perf_counter() - started
            with db.write() as conn:
                conn.execute(reminders.delete().where(reminders.c.kind == "baseline"))
            started = time.perf_counter()
            result = replan(db, config, now=now)
            planning = time.perf_counter() - started
            assert result.appointments == count, result
            line("reminder_planning_appointments", result.appointments, "appointments")
            line("reminder_steps_planned", result.steps, "steps")
            line("reminder_planning_time", planning, "s")
            line("reminder_planning_rate", result.appointments / planning, "appointments/s")
            line("bare_reminder_insert_time", bare, "s")
            line("bare_reminder_insert_rate", rows / bare, "rows/s")
            line("reminder_planning_over_bare_insert", planning / (bare * result.steps / rows),
                 "x")
        finally:
            db.dispose()


def load_appointments(db: Any, count: int, now: datetime) -> list[str]:
    specialties = ("cardiology", "gastroenterology", "dermatology", "neurology")
    zones = ("America/Chicago", "America/New_York", "America/Los_Angeles")
    ids = []
    with db.write() as conn:
        for i in range(0, count, 5000):
            chunk = range(i, min(count, i + 5000))
            refs = [{"id": f"r{n}", "source_key": f"bench|{n}", "stage": "scheduled",
                     "task_status": "in-progress", "business_status": "5.1.1",
                     "priority": "routine", "patient": f"Patient/{n}", "owner": "",
                     "service_request": f"ServiceRequest/{n}",
                     "specialty": specialties[n % 4], "payer": "", "auth_state": "",
                     "created_at": now, "updated_at": now, "version": 1, "state": {},
                     "task": {}} for n in chunk]
            conn.execute(referrals.insert(), refs)
            rows = [{"id": uuid.uuid4().hex, "referral_id": f"r{n}", "server": "bench",
                     "appointment_id": f"a{n}", "destination": "b", "status": "booked",
                     "start": now + timedelta(days=2 + n % 60, hours=n % 9),
                     "time_zone": zones[n % 3], "slots": [], "created_at": now,
                     "updated_at": now, "sequence": 0} for n in chunk]
            conn.execute(appointments.insert(), rows)
            ids += [r["id"] for r in rows]
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--slots", type=int, default=50_000)
    parser.add_argument("--appointments", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--sorted-rounds", type=int, default=3,
                        help="rounds of the whole-calendar `_sort=start` search (slow)")
    parser.add_argument("--only", choices=("slots", "reminders"), default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for name in ("alembic", "refloop", "werkzeug"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-scheduling-") as tmp:
        print(f"database: {args.database}", flush=True)
        if args.only in (None, "slots"):
            bench_slot_page(args.database, Path(tmp) / "slots", args.slots, args.rounds,
                            args.sorted_rounds)
        if args.only in (None, "reminders"):
            bench_reminders(args.database, Path(tmp) / "reminders", args.appointments)


if __name__ == "__main__":
    main()
