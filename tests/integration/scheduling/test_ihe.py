"""IHE ITI Scheduling ($find, $hold, $book) against a FAKE IHE server (tests/integration/
scheduling/ihe_server.py says why: no such server runs here): the operations are discovered
from the CapabilityStatement of a destination declared `fhir`, proposed appointments are
offered soonest first, two patients racing for one get exactly one booking, and cancelling goes
through `$book` with status cancelled."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from calendar_data import Sekmet, make_calendar
from ihe_server import ihe_app
from sched_world import make_world, open_referral
from werkzeug.serving import make_server

from referrals.model import Stage
from scheduling.adapter import PATIENT
from scheduling.sources.ihe import IheSource


def test_find_hold_book_race_and_cancel(database_url: str, tmp_path: Path,
                                        sekmet: Sekmet) -> None:
    first = (datetime.now(UTC) + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    starts = [first + timedelta(hours=n) for n in (2, 0, 1)]
    fake = ihe_app(starts)
    server = make_server("127.0.0.1", 0, fake, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    calendar = make_calendar(sekmet.base, slots=0)
    services, _app = make_world(database_url, tmp_path, calendar, destination={
        "fhir_base": f"http://127.0.0.1:{server.server_port}/fhir",
        "schedule_actors": ["Practitioner/ihe-doc"]})
    try:
        scheduling = services.adapters["scheduling"]
        one, two = open_referral(services, calendar), open_referral(services, calendar)
        page = scheduling.booker.find(one.id)
        assert isinstance(scheduling.sources.for_destination(page.destination), IheSource)
        assert [o.key for o in page.options] == ["Appointment/p1", "Appointment/p2",
                                                 "Appointment/p0"]
        assert page.options[0].clinician == "Dr Ana Ruiz"
        results = {}
        barrier = threading.Barrier(2)

        def attempt(referral_id: str) -> None:
            barrier.wait()
            results[referral_id] = scheduling.booker.book(referral_id, "Appointment/p1",
                                                          PATIENT)

        threads = [threading.Thread(target=attempt, args=(r.id,)) for r in (one, two)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        winners = [rid for rid, outcome in results.items() if outcome.booked is not None]
        assert len(winners) == 1
        loser = next(o for o in results.values() if o.taken)
        assert "Appointment/p1" not in [o.key for o in loser.next_page.options]
        booked = fake.extensions["booked"]
        assert [b["_proposal"] for b in booked.values()] == ["p1"]
        [appointment] = booked.values()
        winner = services.store.get(winners[0])
        assert winner.stage == Stage.SCHEDULED
        assert {"reference": winner.service_request} in appointment["basedOn"]
        scheduling.booker.cancel(winner.id, PATIENT, "cannot come")
        from referrals.worker import Worker
        from refloop.wiring import all_handlers

        Worker(services.work, {"scheduling.release": all_handlers(services)[
            "scheduling.release"]}).drain()
        assert appointment["status"] == "cancelled"
        assert "Appointment/p1" in [o.key for o in scheduling.booker.find(two.id).options]
    finally:
        server.shutdown()
        services.close()
