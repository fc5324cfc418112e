"""Two workers doing the first submit of the same referral at the same moment: one request is
made and sent once, on SQLite and PostgreSQL, against the OTHER PAYER (a fake: a payer cannot
run here)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pas_client.flow import PriorAuthFlow
from referrals.store.work import WorkItem

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pas_world import PAYER, World, close_world, make_world
from payers import OtherPayerUnderTest


@pytest.fixture(name="other")
def other_fixture(database_url: str, tmp_path: Path) -> Iterator[World]:
    made = make_world("other", database_url, tmp_path)
    yield made
    close_world(made)


def leased(world: World, count: int, payload: dict[str, Any]) -> list[WorkItem]:
    """`count` pas.submit items, each leased by its own worker."""
    for n in range(count):
        world.services.work.enqueue("pas.submit", payload, key=f"pas.submit:twice:{n}")
    return [world.services.work.claim(f"worker-{n}", limit=1, kinds=["pas.submit"])[0]
            for n in range(count)]


def in_threads(flow: PriorAuthFlow, items: list[WorkItem]) -> None:
    errors: list[BaseException] = []

    def run(item: WorkItem) -> None:
        try:
            flow.handle_submit(item)
        except BaseException as exc:  # reported below
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors


def submits(world: World) -> int:
    assert isinstance(world.payer, OtherPayerUnderTest)
    return sum(1 for path, _ in world.payer.payer.received if path == "/Claim/$submit")


def test_two_workers_submitting_the_same_referral_send_once(
        other: World, monkeypatch: pytest.MonkeyPatch) -> None:
    referral = other.referral()
    flow = other.flow
    both_checked = threading.Barrier(2, timeout=20)
    live_request = flow.live_request

    def checked_together(referral_id: str, payer: str) -> Any:
        found = live_request(referral_id, payer)
        both_checked.wait()  # each has seen no live request before either adds one
        return found
    monkeypatch.setattr(flow, "live_request", checked_together)
    in_threads(flow, leased(other, 2, {"referral_id": referral.id, "payer": PAYER}))
    [request] = other.store.for_referral(referral.id)
    assert request.status == "approved" and submits(other) == 1


def test_a_request_being_sent_is_claimed_by_one_work_item(other: World) -> None:
    """Both find the same request in `sending` (as after a crash): one sends it; the other
    may take it over once the first work item is no longer pending."""
    referral = other.referral()
    request, sendable = other.flow.prepare(referral, other.flow.config.payer(PAYER))
    assert sendable and request.status == "sending"
    first, second = leased(other, 2, {"referral_id": referral.id, "payer": PAYER})
    assert other.store.claim_send(request.id, first.idempotency_key)
    assert not other.store.claim_send(request.id, second.idempotency_key)
    assert other.store.claim_send(request.id, first.idempotency_key)  # its retry resends
    assert other.services.work.complete(first, first.lease_owner or "")
    assert other.store.claim_send(request.id, second.idempotency_key)
    other.flow.handle_submit(first)  # claimed by the second now: not sent
    assert submits(other) == 0 and other.request(request.id).status == "sending"
