"""Missed events on topic-based Subscriptions: a gap in the event numbers asks the server for
exactly the missing events (`$events`), and falls back to the broad reconciliation on servers
without it; `$status` finds events the server counted beyond ours. A hook registered for a server
that sends no headers is authenticated by its path alone; every other hook still needs its
secret.

sekmet-fhir (the real peer) offers `$status` but no `$events`, and no server that runs here
offers `$events` (HAPI FHIR 8.8 has neither), so the `$events` case puts a small fake in front of
sekmet that answers `$events` itself and passes every other request through to sekmet.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from werkzeug.serving import make_server

from referrals.store.schema import work_items
from referrals.worker import Worker
from refloop.services import Services
from refloop.wiring import all_handlers
from subscriptions.adapter import SubscriptionsAdapter
from subscriptions.config import FhirServer
from subscriptions.mapping import source_key
from subscriptions.registry import REFERRAL_KIND, REFERRALS


def adapter(services: Services) -> SubscriptionsAdapter:
    found: SubscriptionsAdapter = services.adapters["subscriptions"]
    return found


def drain(services: Services) -> int:
    return Worker(services.work, all_handlers(services)).drain()


def kinds(services: Services, kind: str) -> list[dict[str, Any]]:
    with services.db.read() as c:
        rows = c.execute(sa.select(work_items.c.payload)
                         .where(work_items.c.kind == kind)).scalars().all()
    return [dict(r) for r in rows]


def status_bundle(kind: str, events: list[tuple[int, str]], since: int) -> dict[str, Any]:
    """An R4 backport notification (Parameters status entry), built here."""
    parameter: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": "Subscription/sub-1"}},
        {"name": "status", "valueCode": "active"}, {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(since)}]
    parameter += [{"name": "notification-event", "part": [
        {"name": "event-number", "valueString": str(n)},
        {"name": "focus", "valueReference": {"reference": focus}}]} for n, focus in events]
    return {"resourceType": "Bundle", "type": "history", "entry": [
        {"resource": {"resourceType": "Parameters", "parameter": parameter}}]}


class EventsFake:
    """Answers `Subscription/{id}/$events` from `events`; passes everything else to sekmet."""

    def __init__(self, sekmet_base: str) -> None:
        self.sekmet = sekmet_base
        self.events: dict[int, str] = {}
        self.asked: list[str] = []
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.base = f"http://127.0.0.1:{self.server.server_port}/fhir"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
        if path.endswith("/$events"):
            self.asked.append(query)
            args = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            wanted = range(int(args["eventsSinceNumber"]), int(args["eventsUntilNumber"]) + 1)
            body = status_bundle("query-event", [(n, self.events[n]) for n in wanted
                                                 if n in self.events], max(self.events))
            start_response("200 OK", [("Content-Type", "application/fhir+json")])
            return [json.dumps(body).encode()]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        reply = requests.request(environ["REQUEST_METHOD"],
                                 f"{self.sekmet}{path.removeprefix('/fhir')}"
                                 + (f"?{query}" if query else ""),
                                 data=environ["wsgi.input"].read(length) if length else None,
                                 headers={"Accept": "application/fhir+json",
                                          "Content-Type": "application/fhir+json"}, timeout=10)
        start_response(f"{reply.status_code} X", [
            ("Content-Type", reply.headers.get("Content-Type", "application/fhir+json"))])
        return [reply.content]


@pytest.fixture
def fake(sekmet: Any) -> Iterator[EventsFake]:
    found = EventsFake(sekmet.base)
    yield found
    found.server.shutdown()


def test_a_gap_is_recovered_with_events(fake: EventsFake, sekmet: Any, listener: Any,
                                        kit: SimpleNamespace) -> None:
    services = listener.services
    subs = adapter(services)
    subs.notifications.gap_grace_seconds = 0
    subs.servers = [FhirServer(base_url=fake.base, flavour="r4-backport")]
    hook = subs.registry.open_hook(server=fake.base, purpose=REFERRALS,
                                   deliver_kind=REFERRAL_KIND, flavour="r4-backport",
                                   criteria=subs.servers[0].criteria, status="active")
    subs.registry.attach(hook.id, "sub-1", status="active")
    p = sekmet.create(kit.patient())["id"]
    d = sekmet.create(kit.practitioner())["id"]
    srs = [sekmet.create(kit.service_request(p, d, reason=f"order {n}")) for n in range(4)]
    fake.events = {n + 1: f"{fake.base}/ServiceRequest/{sr['id']}" for n, sr in enumerate(srs)}
    headers = {"Authorization": f"Bearer {hook.secret}"}
    for number in (1, 4):  # 2 and 3 were lost on the way
        reply = requests.post(hook.url, json=status_bundle(
            "event-notification", [(number, fake.events[number])], number), headers=headers,
            timeout=10)
        assert reply.status_code == 200
        drain(services)
    drain(services)
    assert fake.asked == ["eventsSinceNumber=2&eventsUntilNumber=3&content=id-only"]
    assert kinds(services, "subscriptions.reconcile") == []  # no broad search
    for sr in srs:
        referral = services.store.try_get_by_source(source_key(fake.base, sr["id"]))
        assert referral is not None, f"ServiceRequest/{sr['id']} was not recovered"
    recovered = services.store.try_get_by_source(source_key(fake.base, srs[1]["id"]))
    assert recovered is not None
    assert services.store.events(recovered.id)[0].source_message == "$events:2-3"


def test_without_events_a_gap_falls_back_to_reconciliation_and_status_is_read(
        sekmet: Any, listener: Any, kit: SimpleNamespace) -> None:
    services = listener.services
    subs = adapter(services)
    subs.notifications.gap_grace_seconds = 0
    subs.servers = [FhirServer(base_url=sekmet.base, flavour="r4-backport")]
    outcome = subs.register(sekmet.base)
    assert (outcome.flavour, outcome.status) == ("r4-backport", "active")
    hook = subs.registry.try_get_hook(outcome.hook_id or "")
    assert hook is not None
    p = sekmet.create(kit.patient())["id"]
    d = sekmet.create(kit.practitioner())["id"]
    first = sekmet.create(kit.service_request(p, d))
    kit.wait_for(lambda: drain(services) >= 0 and services.store.try_get_by_source(
        source_key(sekmet.base, first["id"])), 15, "the first event did not arrive")
    focus = f"{sekmet.base}/ServiceRequest/{first['id']}"
    header = sekmet.read(f"Subscription/{outcome.subscription_id}")["channel"]["header"][0]
    reply = requests.post(hook.url, json=status_bundle("event-notification", [(9, focus)], 9),
                          headers={"Authorization": header.partition(": ")[2]}, timeout=10)
    assert reply.status_code == 200
    drain(services)
    drain(services)
    whys = [r["why"] for r in kinds(services, "subscriptions.reconcile")]
    assert any(w.startswith("events 2-8 missed; no $events") for w in whys), whys

    # $status (sekmet offers it): the server counted fewer events than the 9 we saw, so
    # nothing is asked; our count rolled back below the server's means a recovery is asked for
    row = subs.registry.get(hook.id)
    assert subs.recovery.check_status(row) == "active"
    assert [k for k in kinds(services, "subscriptions.events") if k["since"] == 1] == []
    behind = row.__class__(**{**row.__dict__, "last_event_number": "0"})
    subs.recovery.check_status(behind)
    assert [(k["since"], k["until"]) for k in kinds(services, "subscriptions.events")
            if k["since"] == 1] == [(1, 1)]


def test_a_path_only_hook_needs_no_header_and_others_still_do(listener: Any) -> None:
    subs = adapter(listener.services)
    plain = subs.registry.open_hook(server="http://ehr.invalid/fhir", purpose=REFERRALS,
                                    deliver_kind=REFERRAL_KIND)
    path_only = subs.registry.open_hook(server="http://ehr.invalid/fhir", purpose=REFERRALS,
                                        deliver_kind=REFERRAL_KIND, path_only=True)
    body = status_bundle("event-notification", [(1, "ServiceRequest/1")], 1)
    assert requests.post(plain.url, json=body, timeout=10).status_code == 401
    assert requests.post(path_only.url, json=body, timeout=10).status_code == 200
    other = path_only.id[:-1] + ("a" if path_only.id[-1] != "a" else "b")
    assert requests.post(path_only.url.replace(path_only.id, other), json=body,
                         timeout=10).status_code == 401
    assert len(path_only.id) >= 32
