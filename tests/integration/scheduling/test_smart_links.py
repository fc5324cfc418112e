"""A SMART Scheduling Links publisher served from files (fixtures/scheduling/publisher: a
`$bulk-publish` manifest and its ndjson files, dates filled in here) by a plain HTTP file
server: slots found (state filter, unknown types ignored, busy slots left out), the `_since`
refresh, and the booking deep link handed to the patient."""

from __future__ import annotations

import functools
import http.server
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from calendar_data import Sekmet, make_calendar
from sched_world import make_world, open_referral

from scheduling.adapter import PATIENT

PUBLISHER = Path(__file__).resolve().parents[3] / "fixtures" / "scheduling" / "publisher"
T1, T2 = "2026-11-30T12:00:00Z", "2026-11-30T12:05:00Z"


class Files(http.server.SimpleHTTPRequestHandler):
    """Serves the directory; `$bulk-publish?_since=...` is the file manifest-since.json."""

    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        parts = urlsplit(self.path)
        if parts.path == "/$bulk-publish":
            name = "manifest-since.json" if "_since" in parse_qs(parts.query) \
                else "manifest.json"
            self.path = f"/{name}"
        super().do_GET()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def publisher(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    site = tmp_path / "site"
    site.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Files, directory=str(site)))
    base = f"http://127.0.0.1:{server.server_port}"
    day1 = (datetime.now(UTC) + timedelta(days=5)).date().isoformat()
    day2 = (datetime.now(UTC) + timedelta(days=6)).date().isoformat()
    values = {"base": base, "transaction_time": T1, "transaction_time_2": T2,
              "day1": day1, "day2": day2}
    for source in PUBLISHER.iterdir():
        text = source.read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        (site / source.name).write_text(text, encoding="utf-8")
    Files.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield base, Files.seen
    server.shutdown()


def test_publisher_slots_since_refresh_and_deep_link(database_url: str, tmp_path: Path,
                                                     sekmet: Sekmet,
                                                     publisher: tuple[str, list[str]]) -> None:
    base, seen = publisher
    calendar = make_calendar(sekmet.base, slots=0)  # only the patient is used
    services, app = make_world(database_url, tmp_path, calendar, destination={
        "source": "smart-links", "manifest_url": f"{base}/$bulk-publish", "states": ["MA"],
        "fhir_base": "", "schedule_actors": [], "time_zone": "America/New_York"})
    try:
        scheduling = services.adapters["scheduling"]
        assert scheduling.refresh_published(datetime.now(UTC)) == 1
        assert "/slots-ca.ndjson" not in seen and "/roles.ndjson" not in seen
        referral = open_referral(services, calendar)
        page = scheduling.booker.find(referral.id)
        assert [o.key for o in page.options] == ["ma-1", "ma-3", "ma-4"]  # busy ma-2 left out
        assert page.options[0].location == "Springfield Heart Clinic, 1 Main St, Springfield, MA"

        client = app.test_client()
        https = {"base_url": "https://refloop.test"}
        token = scheduling.issue_booking_link(referral.id).rsplit("/", 1)[1]
        client.post(f"/p/{token}", data={"day": "23", "month": "4", "year": "1961"}, **https)
        home = client.get("/p/home", **https).data.decode()
        assert "Springfield Heart Clinic" in home and "9:00 AM" in home
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', home).group(1)
        handoff = client.post("/p/book", data={"slot": "ma-1", "csrf_token": csrf}, **https)
        assert handoff.status_code == 200
        link = re.search(r'href="(https://book\.springfield\.example[^"]+)"',
                         handoff.data.decode()).group(1).replace("&amp;", "&")
        query = parse_qs(urlsplit(link).query)
        assert urlsplit(link).path == "/slot/ma-1"
        assert query == {"clinic": ["sp"], "source": ["refloop"],
                         "booking-referral": [referral.id]}
        assert services.store.get(referral.id).stage.value == "accepted"  # booked elsewhere

        assert scheduling.refresh_published(datetime.now(UTC)) == 0  # not due yet
        source = scheduling.sources.for_destination(scheduling.config.destinations[0])
        result = source.refresh(services.cursors)
        assert not result.full and result.transaction_time == T2
        assert f"/$bulk-publish?_since={T1.replace(':', '%3A')}" in seen
        after = scheduling.booker.find(referral.id)
        assert [o.key for o in after.options] == ["ma-5", "ma-3", "ma-4"]
        assert scheduling.booker.book(referral.id, "ma-1", PATIENT).taken
    finally:
        services.close()
