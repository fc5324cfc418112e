"""Unauthenticated launches cannot fill the database: pending launch states expire and are
swept, and each source address (the client behind a trusted proxy) may hold only a few; the
redirect URI never comes from the Host header."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa
from smart_harness import smart_settings
from strict_ehr import StrictEhr

from referrals.store.work import WorkItem
from refloop.app import create_app
from refloop.services import Services, build_services
from refloop.wiring import all_handlers
from smart_app.tables import launch_states

LIMIT = 20


def rows(services: Services) -> int:
    with services.db.read() as c:
        return int(c.execute(sa.select(sa.func.count()).select_from(launch_states)).scalar_one())


def launch(client: Any, ehr: StrictEhr, address: str, **headers: str) -> Any:
    return client.get("/smart/launch", query_string={"iss": ehr.fhir, "launch": "x"},
                      environ_base={"REMOTE_ADDR": address}, headers=headers)


def test_two_hundred_launches_from_one_address_store_at_most_the_limit(
        database_url: str, tmp_path: Path, ehr: StrictEhr) -> None:
    services = build_services(smart_settings(database_url, tmp_path, ehr, tmp_path / "k.pem",
                                             private_key_file="", kid="",
                                             client_secret="s3cret"))
    try:
        client = create_app(services).test_client()
        answers = [launch(client, ehr, "203.0.113.9") for _ in range(200)]
        assert [a.status_code for a in answers[:LIMIT]] == [302] * LIMIT
        refused = answers[LIMIT:]
        assert {a.status_code for a in refused} == {429}
        assert 0 < int(refused[0].headers["Retry-After"]) <= 601
        assert "relaunch" in refused[0].get_data(as_text=True)
        assert rows(services) == LIMIT
        assert launch(client, ehr, "198.51.100.20").status_code == 302  # others still launch
        assert rows(services) == LIMIT + 1
    finally:
        services.close()


def test_expired_and_used_states_are_swept(database_url: str, tmp_path: Path,
                                           ehr: StrictEhr) -> None:
    services = build_services(smart_settings(database_url, tmp_path, ehr, tmp_path / "k.pem",
                                             private_key_file="", kid="",
                                             client_secret="s3cret"))
    try:
        client = create_app(services).test_client()
        for _ in range(LIMIT):
            launch(client, ehr, "203.0.113.9")
        assert launch(client, ehr, "203.0.113.9").status_code == 429
        with services.db.write() as c:  # ten minutes and a second later
            c.execute(launch_states.update().values(
                created_at=datetime.now(UTC) - timedelta(minutes=10, seconds=1)))
        all_handlers(services)["smart.sweep"](WorkItem(
            id=1, kind="smart.sweep", idempotency_key="t", payload={}, attempts=1, max_attempts=1,
            lease_owner="t"))
        assert rows(services) == 0
        assert launch(client, ehr, "203.0.113.9").status_code == 302  # the source may again
        with services.db.write() as c:
            c.execute(launch_states.update().values(used_at=datetime.now(UTC)))
        assert launch(client, ehr, "198.51.100.1").status_code == 302  # sweeps the used one
        assert rows(services) == 1
    finally:
        services.close()


def test_behind_a_trusted_proxy_each_client_has_its_own_limit(
        database_url: str, tmp_path: Path, ehr: StrictEhr) -> None:
    settings = smart_settings(database_url, tmp_path, ehr, tmp_path / "k.pem",
                              private_key_file="", kid="", client_secret="s3cret")
    services = build_services(settings.with_changes(trusted_proxies=("10.0.0.5",)))
    try:
        client = create_app(services).test_client()
        for _ in range(LIMIT):
            assert launch(client, ehr, "10.0.0.5",
                          **{"X-Forwarded-For": "203.0.113.9"}).status_code == 302
        assert launch(client, ehr, "10.0.0.5",
                      **{"X-Forwarded-For": "203.0.113.9"}).status_code == 429
        assert launch(client, ehr, "10.0.0.5",
                      **{"X-Forwarded-For": "198.51.100.4"}).status_code == 302
        # an untrusted peer cannot pick a fresh address with the header
        for _ in range(LIMIT):
            launch(client, ehr, "192.0.2.77", **{"X-Forwarded-For": "1.2.3.4"})
        assert launch(client, ehr, "192.0.2.77",
                      **{"X-Forwarded-For": "5.6.7.8"}).status_code == 429
    finally:
        services.close()


def test_the_redirect_uri_never_comes_from_the_host(database_url: str, tmp_path: Path,
                                                    ehr: StrictEhr) -> None:
    for public in ("", "https://refloop.example.org"):
        settings = smart_settings(database_url, tmp_path, ehr, tmp_path / "k.pem", public,
                                  private_key_file="", kid="", client_secret="s3cret")
        services = build_services(settings)
        try:
            answer = create_app(services).test_client().get(
                "/smart/launch", query_string={"iss": ehr.fhir, "launch": "x"},
                headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"})
            assert answer.status_code == 302
            sent = parse_qs(urlsplit(answer.headers["Location"]).query)
            expected = (public or "http://127.0.0.1:8080") + "/smart/callback"
            assert sent["redirect_uri"] == [expected]
        finally:
            services.close()
