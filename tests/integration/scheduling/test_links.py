"""The patient link's token handling, on SQLite and PostgreSQL: expired, revoked and tampered
links; the attempt limits per link (the link locks, visibly to the coordinator) and per client
address; nothing shown before the check; a link never reaches another referral's data."""

from __future__ import annotations

import logging
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from calendar_data import Calendar, Sekmet, destination, make_calendar
from sched_world import World, make_world, open_referral
from werkzeug.serving import make_server

from scheduling.adapter import PATIENT, SchedulingAdapter
from scheduling.config import from_section
from scheduling.coordinator import summary
from scheduling.links import digest
from scheduling.tables import offers

RIGHT = {"day": "23", "month": "04", "year": "1961"}
WRONG = {"day": "24", "month": "04", "year": "1961"}


def token_of(url: str | None) -> str:
    assert url is not None
    return url.rsplit("/", 1)[1]


def test_the_token_is_256_bits_and_only_its_hash_is_stored(world: World) -> None:
    referral = world.referral()
    token = token_of(world.scheduling.issue_booking_link(referral.id))
    assert len(token) >= 43  # 32 random bytes, URL-safe base64
    assert len(world.scheduling.links.for_referral(referral.id)) == 1
    with world.services.db.read() as conn:
        stored = conn.exec_driver_sql("SELECT token_hash FROM scheduling_links").scalars().all()
    assert stored == [digest(token)] and token not in stored


def test_nothing_about_the_referral_is_shown_before_the_check(world: World) -> None:
    referral = world.referral()
    page = world.get(f"/p/{token_of(world.scheduling.issue_booking_link(referral.id))}")
    body = page.data.decode()
    assert page.status_code == 200 and "date of birth" in body.lower()
    for secret in ("Okafor", "Lindqvist", "Heart Clinic", "cardiology", referral.id):
        assert secret.lower() not in body.lower()
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert world.get("/p/home").status_code == 401


def test_expired_revoked_and_tampered_links_are_refused(world: World) -> None:
    referral = world.referral()
    links = world.scheduling.links
    expired = links.issue(referral.id, now=datetime.now(UTC) - timedelta(days=15))
    revoked = token_of(world.scheduling.issue_booking_link(referral.id))
    good = token_of(world.scheduling.issue_booking_link(referral.id))
    [*_, last] = links.for_referral(referral.id)
    assert links.revoke(links.for_referral(referral.id)[1].id)
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
    for token in (expired, revoked, tampered, good + "x", good[:-1], "x" * 43):
        assert world.get(f"/p/{token}").status_code == 404
        refused = world.post(f"/p/{token}", data=RIGHT)
        assert refused.status_code == 404 and "Set-Cookie" not in refused.headers
    assert world.post(f"/p/{good}", data=RIGHT).status_code == 303
    assert last.state(datetime.now(UTC)).value == "valid"


def test_wrong_dates_lock_the_link_and_the_coordinator_sees_it(world: World) -> None:
    referral = world.referral()
    token = token_of(world.scheduling.issue_booking_link(referral.id))
    for left in (4, 3, 2, 1):
        page = world.post(f"/p/{token}", data=WRONG)
        assert page.status_code == 400 and f"Attempts left: {left}" in page.data.decode()
    assert world.post(f"/p/{token}", data={"day": "31", "month": "02", "year": "1961"}
                      ).status_code == 400  # not a date: not counted
    locked = world.post(f"/p/{token}", data=WRONG)
    assert locked.status_code == 423 and b"locked" in locked.data
    assert world.post(f"/p/{token}", data=RIGHT).status_code == 423
    assert world.get(f"/p/{token}").status_code == 423
    seen = summary(world.scheduling, referral.id)
    assert seen["locked"] and seen["links"][0]["failed_attempts"] == 5
    fresh = token_of(world.scheduling.issue_booking_link(referral.id))
    assert world.post(f"/p/{fresh}", data=RIGHT).status_code == 303


def test_attempts_are_limited_per_client_address(database_url: str, tmp_path: Path,
                                                 sekmet: Sekmet) -> None:
    calendar = make_calendar(sekmet.base, slots=1)
    services, app = make_world(database_url, tmp_path, calendar, dob_attempts_per_source=3)
    try:
        client = app.test_client()
        scheduling = services.adapters["scheduling"]
        first, second = (open_referral(services, calendar) for _ in range(2))
        one = token_of(scheduling.issue_booking_link(first.id))
        two = token_of(scheduling.issue_booking_link(second.id))
        post = lambda token, data, addr: client.post(  # noqa: E731
            f"/p/{token}", data=data, base_url="https://refloop.test",
            environ_overrides={"REMOTE_ADDR": addr})
        assert post(one, WRONG, "10.0.0.7").status_code == 400
        assert post(two, WRONG, "10.0.0.7").status_code == 400
        assert post("guessed" * 7, RIGHT, "10.0.0.7").status_code == 404
        assert post(two, RIGHT, "10.0.0.7").status_code == 429  # even the right date
        assert client.get(f"/p/{two}", base_url="https://refloop.test",
                          environ_overrides={"REMOTE_ADDR": "10.0.0.7"}).status_code == 429
        assert post(two, RIGHT, "10.0.0.8").status_code == 303  # another address is fine
        for guess in ("a" * 43, "b" * 43, "c" * 43):  # guessing with GETs counts too
            assert client.get(f"/p/{guess}", base_url="https://refloop.test",
                              environ_overrides={"REMOTE_ADDR": "10.0.0.9"}).status_code == 404
        assert post(one, RIGHT, "10.0.0.9").status_code == 429
    finally:
        services.close()


def test_a_session_never_reaches_another_referrals_data(world: World) -> None:
    mine, theirs = world.referral(), world.referral()
    other = make_calendar(world.calendar.base, slots=1)
    stranger = open_referral(world.services, other)
    other_world = make_world_for(world, other)
    booked = other_world.booker.book(stranger.id, other.slots[0], PATIENT)
    assert booked.booked is not None
    offer = world.scheduling.waitlist
    token = token_of(world.scheduling.issue_booking_link(mine.id))
    assert world.post(f"/p/{token}", data=RIGHT).status_code == 303
    home = world.get("/p/home").data.decode()
    assert "Choose a time" in home and other.slots[0] not in home
    assert world.get(f"/p/offer/{'0' * 32}").status_code == 404
    assert world.get("/p/appointment.ics").status_code == 404  # mine has none; theirs exists
    stolen = world.post("/p/book", data={"slot": other.slots[0],
                                         "csrf_token": _csrf(home)})
    assert stolen.status_code == 409  # another destination's slot is not offered to us
    assert world.scheduling.book.current(mine.id) is None
    assert offer.open_offer_for(theirs.id) is None


def test_the_session_expires(database_url: str, tmp_path: Path, sekmet: Sekmet) -> None:
    calendar = make_calendar(sekmet.base, slots=1)
    services, app = make_world(database_url, tmp_path, calendar, session_minutes=0.001)
    try:
        client = app.test_client()
        referral = open_referral(services, calendar)
        token = token_of(services.adapters["scheduling"].issue_booking_link(referral.id))
        answer = client.post(f"/p/{token}", data=RIGHT, base_url="https://refloop.test")
        assert answer.status_code == 303
        import time

        time.sleep(0.1)
        assert client.get("/p/home", base_url="https://refloop.test").status_code == 401
    finally:
        services.close()


def make_world_for(world: World, calendar: Calendar) -> SchedulingAdapter:
    """A second adapter over the same store whose destination is another calendar."""
    config = from_section({"destinations": [destination(calendar)]})
    return SchedulingAdapter(world.scheduling.core, config)


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def test_a_form_counts_as_ours_by_the_public_url_not_the_host(world: World) -> None:
    """Behind a reverse proxy the Host is the upstream address: the Origin must be the
    configured public URL (https://refloop.test here)."""
    client, upstream = world.client, "https://10.0.0.7:8443"
    token = token_of(world.scheduling.issue_booking_link(world.referral().id))
    assert client.post(f"/p/{token}", data=RIGHT, base_url=upstream).status_code == 303
    page = client.get("/p/home", base_url=upstream)
    form = {"csrf_token": re.search(r'name="csrf_token" value="([^"]+)"',
                                    page.data.decode()).group(1)}
    for origin in (upstream, "https://evil.test"):
        refused = client.post("/p/close", data=form, base_url=upstream,
                              headers={"Origin": origin})
        assert refused.status_code == 403
    cross = client.post("/p/close", data=form, base_url=upstream,
                        headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    closed = client.post("/p/close", data=form, base_url=upstream,
                         headers={"Origin": "https://refloop.test"})
    assert closed.status_code == 200
    assert client.get("/p/home", base_url=upstream).status_code == 401


def test_a_served_link_never_puts_its_token_in_the_request_log(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    """The app on werkzeug's server (as the demo and the tests serve it): its request line and
    the app's own access line show no token."""
    token = token_of(world.scheduling.issue_booking_link(world.referral().id))
    server = make_server("127.0.0.1", 0, world.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.INFO), caplog.at_level(logging.INFO, logger="werkzeug"), \
                caplog.at_level(logging.INFO, logger="refloop.http"):
            page = requests.get(f"http://127.0.0.1:{server.server_port}/p/{token}", timeout=10)
    finally:
        server.shutdown()
        thread.join()
    assert page.status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert any("GET /p/[redacted] HTTP/1.1" in line for line in lines), lines
    assert token not in caplog.text
    http = [r for r in caplog.records if r.getMessage() == "http"]
    assert [r.path for r in http] == ["/p/<token>"]  # type: ignore[attr-defined]


def offered(world: World, referral_id: str) -> str:
    """A waitlist offer made to the referral, open for a day; its id."""
    now = datetime.now(UTC)
    start = now + timedelta(days=3)
    offer_id = uuid.uuid4().hex
    with world.services.db.write() as c:
        c.execute(offers.insert().values(
            id=offer_id, referral_id=referral_id, destination="cardiology",
            slot_key="slot-early", slot={"start": start.isoformat(), "end": "",
                                         "location": "Main St", "clinician": "Dr Reed"},
            created_at=now, expires_at=now + timedelta(days=1), status="offered"))
    return offer_id


def test_an_offer_is_reached_by_its_exact_id_only(world: World) -> None:
    mine = world.referral()
    offer_id = offered(world, mine.id)
    token = token_of(world.scheduling.issue_booking_link(mine.id))
    opened = world.post(f"/p/{token}", data={**RIGHT, "offer": offer_id + "ff"})
    assert opened.status_code == 303 and opened.headers["Location"] == "/p/home"
    csrf = _csrf(world.get("/p/home").data.decode())
    for loose in (offer_id + "x", offer_id + "0" * 32, offer_id.upper(), offer_id[:31]):
        assert world.get(f"/p/offer/{loose}").status_code == 404, loose
        taken = world.post(f"/p/offer/{loose}", data={"csrf_token": csrf})
        assert taken.status_code == 404, loose
    assert world.get(f"/p/offer/{offer_id}").status_code == 200


def test_unknown_or_malformed_people_paths_get_our_own_page(world: World) -> None:
    """A trailing slash, a doubled slash, a missing or extra segment under a patient's or a
    provider's link: the area's own not-found page and headers, never the framework's page
    and never a redirect (the URL may carry a token)."""
    referral = world.referral()
    good = token_of(world.scheduling.issue_booking_link(referral.id))
    pages = {
        "This link does not work": (f"/p/{good}/", f"/p//{good}", "/p/home/", "/p/", "/p/x/y",
                                    "/p/offer/", "/loop/u/abc/", f"/loop/n//{good}", "/loop/"),
        "This unsubscribe link is not valid": (f"/outreach/unsubscribe/{good}/",
                                               "/outreach/unsubscribe/", "/outreach/unsubscribe"),
    }
    for text, paths in pages.items():
        for path in paths:
            for answer in (world.get(path), world.post(path)):
                body = answer.data.decode()
                # werkzeug answers a POST to a doubled slash 405 (it finds the GET route
                # once the slashes are merged, which the token routes do not allow)
                allowed = (404, 405) if answer.request.method == "POST" else (404,)
                assert answer.status_code in allowed, (path, answer.status_code)
                assert text in body and "The requested URL" not in body, path
                assert "Location" not in answer.headers, path
                assert answer.headers["Cache-Control"] == "no-store", path
                assert answer.headers["Referrer-Policy"] in ("same-origin", "no-referrer"), path
    wrong = world.client.put("/p/home", base_url="https://refloop.test")
    assert wrong.status_code == 405 and "GET" in wrong.headers["Allow"]
    assert "This link does not work" in wrong.data.decode()
    # the machines' paths keep the framework's answers
    assert world.get("/outreach/twilio/sms/").status_code == 404
