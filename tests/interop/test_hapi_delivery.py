"""Nothing lost, nothing doubled, against the real HAPI FHIR JPA server (HAPI 8.8.0, R4):

* Refloop down while HAPI delivers: HAPI retries a refused delivery for about a minute and then
  drops it (interop/hapi/README.md). Instead of waiting that minute out, the referrals are found by
  `_lastUpdated` reconciliation in a restarted Refloop whose endpoint is still unreachable, so
  nothing can have come by push; HAPI's late retries then arrive and change nothing.
* `$trigger-subscription` replays (by resource id and by search) are stored once.
* Concurrent delivery out of order: HAPI delivers rapid updates on several consumers, and stale
  versions are replayed at the hook after the newest was processed; two workers process them at
  once. The referral ends in the state of the newest version and never goes back.

Both databases (SQLite, PostgreSQL).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import requests
import sqlalchemy as sa

from referrals.model import Stage
from referrals.store.schema import inbox
from referrals.worker import Worker
from refloop.wiring import all_handlers

DELIVERY_S = 30.0
RETRY_S = 70.0  # HAPI retries a refused delivery for about a minute


def inbox_notes(peer: Any) -> list[str]:
    with peer.services.db.read() as c:
        return [str(n or "") for n in c.execute(sa.select(inbox.c.note)).scalars()]


def inbox_total(peer: Any) -> int:
    return sum(peer.services.inbox.counts().values())


def test_refloop_down_while_hapi_delivers_reconciliation_finds_every_referral(
        hapi: Any, refloop_peer: Any, orders: Any) -> None:
    peer = refloop_peer
    outcome = peer.adapter.register(hapi.base)
    assert outcome.status == "active"
    peer.adapter.reconcile(hapi.base)  # the start-up catch-up: sets the _lastUpdated cursor
    before = orders.create(reason="before the outage")
    peer.wait_for(lambda: peer.referral(hapi.base, before["id"]), DELIVERY_S,
                  "push did not work before the outage")

    peer.stop()  # Refloop is down: HAPI's PUTs are refused, and HAPI retries them
    created = [orders.create(reason=f"during the outage {n}") for n in range(5)]
    hapi.update({**before, "status": "revoked"})
    time.sleep(3.0)  # HAPI has tried and is backing off

    peer.restart(serve=False)  # a new Refloop process; its endpoint is still unreachable
    assert peer.referrals_of(hapi.base) and len(peer.referrals_of(hapi.base)) == 1
    progress: list[tuple[int, int]] = []
    result = peer.adapter.reconcile(hapi.base, lambda page, n: progress.append((page, n)))
    assert result.outcomes.get("created") == 5 and result.outcomes.get("cancelled") == 1
    assert progress and progress[0][0] == 1

    def check_every_referral_exactly_once() -> None:
        found = peer.referrals_of(hapi.base)
        assert sorted(r.service_request for r in found) == \
            sorted(f"ServiceRequest/{sr['id']}" for sr in [before, *created])
        for sr in created:
            referral = peer.referral(hapi.base, sr["id"])
            assert referral.stage == Stage.DETECTED
            assert peer.actions(referral.id) == ["detect"]
        revoked = peer.referral(hapi.base, before["id"])
        assert revoked.stage == Stage.CANCELLED
        assert peer.actions(revoked.id) == ["detect", "request-cancel", "cancel"]

    check_every_referral_exactly_once()
    again = peer.adapter.reconcile(hapi.base)
    assert set(again.outcomes) == {"duplicate"}

    # Refloop's endpoint is back: HAPI's pending retries now arrive, are stored, and change
    # nothing (every version was processed by reconciliation).
    peer.start()
    paths = [f"/hooks/{outcome.hook_id}/ServiceRequest/{sr['id']}" for sr in [before, *created]]
    peer.wait_for(lambda: all(peer.seen("PUT", p) for p in paths), RETRY_S,
                  "HAPI's retries did not reach Refloop after the restart")
    peer.drain()
    check_every_referral_exactly_once()
    notes = [n for n in inbox_notes(peer) if "ServiceRequest/" in n]
    assert sum("duplicate" in n for n in notes) >= len(paths)


def test_trigger_subscription_replays_are_deduplicated(
        hapi: Any, refloop_peer: Any, orders: Any) -> None:
    peer = refloop_peer
    outcome = peer.adapter.register(hapi.base)
    first, second = orders.create(reason="first"), orders.create(reason="second")
    for sr in (first, second):
        peer.wait_for(lambda sr=sr: peer.referral(hapi.base, sr["id"]), DELIVERY_S,
                      "no referral")
    hook = f"/hooks/{outcome.hook_id}/ServiceRequest"
    delivered = {sr["id"]: peer.seen("PUT", f"{hook}/{sr['id']}") for sr in (first, second)}
    stored = inbox_total(peer)

    first_id = (f"ServiceRequest/{first['id']}",)
    reply = hapi.trigger(outcome.subscription_id, resource_ids=first_id)
    # HAPI answers "Subscription triggering job submitted as JOB ID: ..." and delivers later
    assert reply["resourceType"] == "Parameters", reply
    hapi.trigger(outcome.subscription_id, resource_ids=first_id)
    hapi.trigger(outcome.subscription_id,
                 search_url=f"ServiceRequest?subject=Patient/{orders.patient_id}")
    peer.wait_for(lambda: peer.seen("PUT", f"{hook}/{first['id']}") >= delivered[first["id"]] + 3
                  and peer.seen("PUT", f"{hook}/{second['id']}") >= delivered[second["id"]] + 1,
                  DELIVERY_S, "HAPI did not replay the notifications")
    peer.drain()

    assert inbox_total(peer) == stored  # every replay was recognised at the door
    assert len(peer.referrals_of(hapi.base)) == 2
    for sr in (first, second):
        assert peer.actions(peer.referral(hapi.base, sr["id"]).id) == ["detect"]


def test_out_of_order_delivery_ends_in_the_newest_version(
        hapi: Any, refloop_peer: Any, orders: Any) -> None:
    peer = refloop_peer
    outcome = peer.adapter.register(hapi.base)
    sr = orders.create(priority="routine", reason="version 1")
    path = f"/hooks/{outcome.hook_id}/ServiceRequest/{sr['id']}"

    # 1. Rapid updates while Refloop is up: HAPI delivers them on several consumers.
    priorities = ["urgent", "asap", "stat", "urgent"]
    current = sr
    for n, priority in enumerate(priorities, start=2):
        current = hapi.update({**current, "priority": priority, "reasonCode": [
            {"text": f"version {n}"}]})
    newest = current["meta"]["versionId"]
    assert newest == "5"
    peer.wait_for(lambda: peer.seen("PUT", path) >= 5, DELIVERY_S,
                  "HAPI did not deliver every version")
    drain_concurrently(peer)
    referral = peer.referral(hapi.base, sr["id"])
    assert (referral.priority, referral.reason_text) == \
        ("urgent", "Referral to cardiology service: version 5")

    # 2. Forced order: newer versions are written while Refloop is down; when it is back, the
    # newest is delivered first and the stale ones after it (ours at once, HAPI's retries
    # whenever its back-off fires), then two workers process them concurrently.
    peer.stop()
    for n, priority in enumerate(["asap", "stat", "routine"], start=6):
        current = hapi.update({**current, "priority": priority, "reasonCode": [
            {"text": f"version {n}"}]})
    assert current["meta"]["versionId"] == "8"
    peer.start()
    # the secret is stored only as a hash: the sender's copy is in the Subscription's header
    line = hapi.read(f"Subscription/{outcome.subscription_id}")["channel"]["header"][0]
    headers = {"Content-Type": "application/fhir+json", "Authorization": line.partition(": ")[2]}
    for version in ("8", "7", "6", "3", "2", "1"):
        old = hapi.read(f"ServiceRequest/{sr['id']}/_history/{version}")
        reply = requests.put(f"{peer.base_url}{path}", data=json.dumps(old), timeout=10,
                             headers={**headers, "If-Match": f'W/"{version}"'})
        assert reply.status_code == 200, reply.text
    peer.wait_for(lambda: peer.seen("PUT", path) >= 5 + 6 + 3, RETRY_S,
                  "HAPI's retries of versions 6-8 did not arrive")
    drain_concurrently(peer)

    referral = peer.referral(hapi.base, sr["id"])
    assert (referral.priority, referral.reason_text) == \
        ("routine", "Referral to cardiology service: version 8")
    assert referral.stage == Stage.DETECTED
    events = peer.services.store.events(referral.id)
    assert [e.action for e in events] == ["detect", *["amend"] * (len(events) - 1)]
    # Every change the referral went through moved it to a newer version, never back.
    versions = [version_of(e.data.get("reason_text") or "") for e in events[1:]]
    assert versions and versions == sorted(set(versions)) and versions[-1] == 8, versions
    assert len(peer.referrals_of(hapi.base)) == 1
    stored = peer.services.resources.try_get("ServiceRequest", sr["id"], server=hapi.base)
    assert stored is not None and stored["meta"]["versionId"] == "8"


def version_of(reason_text: str) -> int:
    """The N of "... version N", the reason each version of the test's order carries."""
    return int(reason_text.rsplit("version ", 1)[1])


def drain_concurrently(peer: Any, workers: int = 2) -> None:
    """Process due work on `workers` threads at once, like several worker processes."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            Worker(peer.services.work, all_handlers(peer.services)).drain()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    peer.drain()
    assert peer.services.work.counts().get("quarantined", 0) == 0
