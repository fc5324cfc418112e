"""Zero loss, no duplicates: redeliveries, two notifications for one version, Refloop down while
referrals are created (found by reconciliation), event gaps and counter restarts."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import requests
import sqlalchemy as sa

from referrals.store.schema import work_items
from referrals.worker import Worker
from refloop.services import Services
from refloop.wiring import all_handlers
from subscriptions.adapter import SubscriptionsAdapter
from subscriptions.config import FhirServer
from subscriptions.mapping import source_key

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "subscriptions"


def adapter(services: Services) -> SubscriptionsAdapter:
    found: SubscriptionsAdapter = services.adapters["subscriptions"]
    return found


def drain(services: Services) -> int:
    return Worker(services.work, all_handlers(services)).drain()


def referrals_of(services: Services, base: str) -> list[Any]:
    return [r for r in services.store.list(limit=1000) if r.source_key.startswith(f"fhir|{base}|")]


def seed(ehr: Any, kit: SimpleNamespace) -> tuple[str, str, str]:
    p = ehr.create(kit.patient())["id"]
    d = ehr.create(kit.practitioner())["id"]
    return p, d, ehr.create(kit.coverage(p))["id"]


def test_redelivery_and_two_notifications_for_one_version_make_one_referral(
        sekmet: Any, listener: Any, kit: SimpleNamespace) -> None:
    services = listener.services
    subs = adapter(services)
    classic = subs.register(sekmet.base)
    subs.servers = [FhirServer(base_url=sekmet.base, flavour="r4-backport")]
    backport = subs.register(sekmet.base)
    assert classic.hook_id != backport.hook_id  # two Subscriptions deliver the same change
    p, d, c = seed(sekmet, kit)
    sr = sekmet.create(kit.service_request(p, d, c))
    kit.wait_for(lambda: services.inbox.counts().get("received", 0) >= 2, 15,
                 "expected a classic and a backport notification")
    first = next(m for m in (services.inbox.get(i) for i in _inbox_ids(services))
                 if json.loads(m.body).get("resourceType") == "ServiceRequest")
    hook = subs.registry.try_get_hook(classic.hook_id or "")
    assert hook is not None
    path = f"{hook.url}/ServiceRequest/{sr['id']}"
    # the secret is stored only as a hash: the sender's copy is in the Subscription's header
    header = sekmet.read(f"Subscription/{classic.subscription_id}")["channel"]["header"][0]
    for _ in range(2):  # the same notification delivered again (a sender retry)
        r = requests.put(path, data=first.body, timeout=5, headers={
            "Content-Type": "application/fhir+json", "Authorization": header.partition(": ")[2]})
        assert r.status_code == 200
    drain(services)
    found = referrals_of(services, sekmet.base)
    assert len(found) == 1
    assert [e.action for e in services.store.events(found[0].id)] == ["detect"]
    # handshake + classic PUT + backport event; the redeliveries were not stored again
    assert services.inbox.counts() == {"processed": 3}


def _inbox_ids(services: Services) -> list[int]:
    from referrals.store.schema import inbox

    with services.db.read() as c:
        return list(c.execute(sa.select(inbox.c.id)).scalars())


def test_downtime_is_caught_up_by_reconciliation(
        tmp_path: Path, listener: Any, kit: SimpleNamespace) -> None:
    ehr = kit.start_sekmet(tmp_path / "ehr", subscriptions={"retries": 1})
    try:
        services = listener.services
        subs = adapter(services)
        outcome = subs.register(ehr.base)
        assert outcome.status == "active"
        subs.reconcile(ehr.base)  # start-up catch-up: sets the cursor
        p, d, c = seed(ehr, kit)
        listener.stop()
        created = [ehr.create(kit.service_request(p, d, c, reason=f"reason {n}"))
                   for n in range(3)]
        kit.wait_for(lambda: ehr.read(f"Subscription/{outcome.subscription_id}")["status"]
                     == "error", 20, "the server should give up delivering to us")
        listener.start()
        drain(services)
        assert referrals_of(services, ehr.base) == []  # nothing was delivered while down
        bar: list[tuple[int, int]] = []
        result = subs.reconcile(ehr.base, lambda page, n: bar.append((page, n)))
        assert result.seen >= 3 and result.outcomes.get("created") == 3
        assert bar and bar[0][0] == 1
        found = referrals_of(services, ehr.base)
        assert sorted(r.service_request for r in found) == \
            sorted(f"ServiceRequest/{sr['id']}" for sr in created)
        again = subs.reconcile(ehr.base)
        assert "created" not in again.outcomes
        assert len(referrals_of(services, ehr.base)) == 3
        # re-activated after catch-up: pushes work again
        assert ehr.read(f"Subscription/{outcome.subscription_id}")["status"] == "active"
        later = ehr.create(kit.service_request(p, d, c, reason="after restart"))
        key = source_key(ehr.base, later["id"])
        kit.wait_for(lambda: drain(services) or services.store.try_get_by_source(key), 15,
                     "push did not resume")
        assert len(referrals_of(services, ehr.base)) == 4
    finally:
        ehr.server.should_exit = True
        ehr.thread.join(timeout=10)


def _event_bundle(number: int, timestamp: str = "2020-05-29T11:44:13Z") -> dict[str, Any]:
    """The official R4 id-only example with its event number changed (built here)."""
    bundle = json.loads((FIXTURES / "backport-1.1.0/r4/Bundle-r4-notification-id-only.json")
                        .read_text())
    bundle = copy.deepcopy(bundle)
    for p in bundle["entry"][0]["resource"]["parameter"]:
        if p["name"] == "events-since-subscription-start":
            p["valueString"] = str(number)
        if p["name"] == "notification-event":
            for part in p["part"]:
                if part["name"] == "event-number":
                    part["valueString"] = str(number)
                if part["name"] == "timestamp":
                    part["valueInstant"] = timestamp
    return bundle


def _reconciles(services: Services) -> list[dict[str, Any]]:
    with services.db.read() as c:
        rows = c.execute(sa.select(work_items.c.payload).where(
            work_items.c.kind == "subscriptions.reconcile")).scalars().all()
    return [dict(r) for r in rows]


def test_event_gaps_and_counter_restarts_schedule_catch_up(listener: Any) -> None:
    services = listener.services
    subs = adapter(services)
    hook = subs.registry.open_hook(server="http://ehr.invalid/fhir", purpose="referrals",
                                   deliver_kind="subscriptions.referral")
    headers = {"Content-Type": "application/fhir+json", "Authorization": f"Bearer {hook.secret}"}
    worker = Worker(services.work, {"subscriptions.notification": subs.handle_notification})

    def deliver(number: int, timestamp: str = "2020-05-29T11:44:13Z") -> None:
        r = requests.post(hook.url, json=_event_bundle(number, timestamp), headers=headers,
                          timeout=5)
        assert r.status_code == 200
        worker.drain()

    deliver(1)
    deliver(2)
    assert _reconciles(services) == []
    deliver(4)
    assert [r["why"] for r in _reconciles(services)] == ["event gap after 2"]
    assert subs.registry.get(hook.id).last_event_number == "4"
    deliver(4)  # a redelivery: stored once, no new catch-up
    assert len(_reconciles(services)) == 1
    deliver(1, "2020-05-30T08:00:00Z")  # the server restarted and its counter began again
    assert [r["why"] for r in _reconciles(services)][-1] == "event counter restarted"
    assert subs.registry.get(hook.id).last_event_number == "1"


def test_polling_only_server_is_served_by_the_timer(sekmet: Any, listener: Any,
                                                    kit: SimpleNamespace) -> None:
    from refloop.scheduler import enqueue_due
    from refloop.wiring import all_timers

    services = listener.services
    subs = adapter(services)
    subs.servers = [FhirServer(base_url=sekmet.base, flavour="polling", poll_interval=15)]
    outcome = subs.register(sekmet.base)
    assert (outcome.flavour, outcome.status, outcome.subscription_id) == \
        ("polling", "polling", None)
    assert sekmet.read("Subscription").get("total", 0) == 0  # nothing registered on the server
    p, d, c = seed(sekmet, kit)
    made = [sekmet.create(kit.service_request(p, d, c, reason=f"polled {n}")) for n in range(2)]
    subs._last_poll.clear()  # the timer treats the server as due (as at worker start)
    timers = [t for t in all_timers(services) if t.kind == "subscriptions.reconcile-due"]
    assert timers and enqueue_due(services.work, timers) == 1
    drain(services)
    found = {r.service_request for r in referrals_of(services, sekmet.base)}
    assert found == {f"ServiceRequest/{sr['id']}" for sr in made}
