"""Pended requests always end: the decision is read from every notification shape, $inquire
follows a pend on a schedule with backoff, and at the payer's deadline (CMS-0057-F: 72 h
expedited, 7 days standard) the request goes to the coordinator. On SQLite and PostgreSQL,
against the PAYER SANDBOX and the OTHER PAYER (both fakes: a payer cannot run here)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from referrals.model import Stage
from referrals.store.schema import work_items

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pas_world import World, close_world, make_world, world_fixture  # noqa: F401
from payers import OtherPayerUnderTest, notification_payload


def pend(world: World, priority: str = "routine") -> tuple[str, str]:
    """A referral whose request the payer pends: (referral id, request id)."""
    world.payer.answer("bundle", code="A4")
    referral = world.referral(priority)
    request = world.submit(referral)
    assert request.status == "pended"
    return referral.id, request.id


def notify(world: World, shape: str) -> None:
    world.services.work.enqueue("pas.notification", notification_payload(
        world.payer.url, world.payer.notification(shape)), key=f"note-{world.payer.events}")
    world.run()


@pytest.mark.parametrize("shape", ["nested", "flattened", "id-only"])
def test_the_decision_is_read_from_every_notification_shape(world: World, shape: str) -> None:
    """nested: the IG's example (the response Bundle inside the notification); flattened:
    Inferno's; id-only: 2.0.1's, followed by a read of the ClaimResponse."""
    referral_id, request_id = pend(world)
    world.payer.release("A1")
    notify(world, shape)
    done = world.request(request_id)
    assert done.status == "approved" and done.auth_number and done.next_check_at is None
    assert world.services.store.get(referral_id).stage == Stage.OUTREACH
    operations = [r.operation for r in world.store.replies(request_id=request_id)]
    assert operations == (["submit", "read"] if shape == "id-only" else ["submit"])


def test_an_id_only_notification_whose_read_fails_falls_back_to_inquire(world: World) -> None:
    _, request_id = pend(world)
    world.payer.release("A1")
    payload = notification_payload(world.payer.url, world.payer.notification("id-only"))
    payload["events"][0]["focus"] = "ClaimResponse/unknown-id"   # both payers answer 404
    world.services.work.enqueue("pas.notification", payload, key="id-only-404")
    world.run()
    assert world.request(request_id).status == "approved"
    assert [r.operation for r in world.store.replies(request_id=request_id)] == \
        ["submit", "inquire"]


def test_a_pend_is_inquired_with_backoff_until_the_decision(world: World) -> None:
    _, request_id = pend(world)
    first = world.request(request_id)
    assert first.next_check_at is not None and first.deadline_at is not None
    assert timedelta(minutes=59) < first.next_check_at - world.clock() <= timedelta(hours=1)
    assert first.deadline_at - world.clock() > timedelta(days=6, hours=23)  # standard
    world.follow_up()                                   # not due yet: nothing asked
    assert world.request(request_id).checks == 0
    world.clock.advance(hours=1, minutes=1)
    world.follow_up()                                   # due: $inquire, still pended
    second = world.request(request_id)
    assert second.status == "pended" and second.checks == 1
    assert second.next_check_at is not None
    assert timedelta(hours=1, minutes=59) < second.next_check_at - world.clock() \
        <= timedelta(hours=2)                           # the wait doubles
    world.payer.release("A1")
    world.clock.advance(hours=2, minutes=1)
    world.follow_up()
    done = world.request(request_id)
    assert done.status == "approved" and done.checks == 2 and done.next_check_at is None
    assert [r.operation for r in world.store.replies(request_id=request_id)] == \
        ["submit", "inquire", "inquire"]


@pytest.mark.parametrize(("priority", "hours"), [("urgent", 72), ("routine", 168)])
def test_no_decision_by_the_deadline_goes_to_the_coordinator(world: World, priority: str,
                                                             hours: int) -> None:
    referral_id, request_id = pend(world, priority)
    deadline = world.request(request_id).deadline_at
    assert deadline is not None
    assert abs((deadline - world.clock()) - timedelta(hours=hours)) < timedelta(minutes=1)
    for _ in range(40):  # every check until the deadline: the payer keeps it pended
        world.clock.advance(hours=6)
        world.follow_up()
        if world.request(request_id).escalated_at:
            break
    escalated = world.request(request_id)
    assert escalated.escalated_at is not None and escalated.next_check_at is None
    assert escalated.status == "pended" and escalated.checks >= 5
    asked = escalated.checks
    referral = world.services.store.get(referral_id)
    assert referral.stage == Stage.AUTH_PENDING and referral.auth_state == "escalated"
    last = world.services.store.events(referral_id)[-1]
    assert last.reason is not None and f"{hours} h" in last.reason.text
    task = world.services.resources.try_get("Task", escalated.task_id, server="local")
    assert task["status"] == "on-hold" and "call the payer" in task["statusReason"]["text"]
    [chase] = world.services.tasks.open_for(referral_id)   # the coordinator's task
    assert chase.kind == "chase-authorization" and "call the payer" in chase.reason
    world.clock.advance(days=3)
    world.follow_up()                                   # nothing more is asked
    assert world.request(request_id).checks == asked
    world.payer.release("A1")                           # a late decision still counts
    notify(world, "flattened")
    assert world.request(request_id).status == "approved"
    assert world.services.tasks.open_for(referral_id) == []   # and closes the task


def test_the_coordinator_records_what_the_payer_said(world: World) -> None:
    referral_id, request_id = pend(world)
    world.clock.advance(days=8)
    world.follow_up()                                   # past the deadline: escalated
    [chase] = world.services.tasks.open_for(referral_id)
    world.services.tasks.complete(chase.id, "approved", "Practitioner/coord-1",
                                  "approved by phone, ref PH-7")
    world.run()
    done = world.request(request_id)
    assert done.status == "approved" and "approved by phone, ref PH-7" in done.last_error
    moved = world.services.store.get(referral_id)
    assert moved.stage == Stage.OUTREACH and moved.auth_state == "approved"


def test_an_empty_inquire_answer_keeps_following(database_url: str, tmp_path: Path) -> None:
    """Only the other payer answers $inquire with nothing (the sandbox always knows)."""
    world = make_world("other", database_url, tmp_path)
    try:
        answered_empty(world)
    finally:
        close_world(world)


def answered_empty(world: World) -> None:
    assert isinstance(world.payer, OtherPayerUnderTest)
    _, request_id = pend(world)
    world.payer.payer.inquire_shape = "empty"
    world.clock.advance(hours=1, minutes=1)
    world.follow_up()
    after = world.request(request_id)
    assert after.status == "pended" and after.checks == 1 and after.next_check_at is not None
    [_, inquire] = world.store.replies(request_id=request_id)
    assert inquire.interpretation == "empty"


def test_a_payer_that_never_answers_leaves_the_request_followed(world: World) -> None:
    """After the last attempt the request is in error, followed by $inquire, and the work item
    is in quarantine with the reason; nothing stays sending silently."""
    referral = world.referral()
    world.payer.fail(503, 503)
    world.services.work.enqueue("pas.submit", {"referral_id": referral.id,
                                               "payer": "Blue Horizon"},
                                key="never-answers", max_attempts=2)
    for _ in range(2):
        world.run()
        with world.services.db.write() as conn:   # the retry is due now, not after backoff
            conn.execute(work_items.update().where(work_items.c.status == "pending")
                         .values(run_at=datetime.now(UTC)))
    [request] = world.store.for_referral(referral.id)
    assert request.status == "error" and "no answer from the payer" in request.last_error
    assert request.next_check_at is not None and request.deadline_at is not None
    assert [r.http_status for r in world.store.replies(request_id=request.id)] == [503, 503]
    [kept] = world.services.quarantine.list()
    assert "503" in kept.reason
    held = world.services.store.get(referral.id)
    assert held.stage == Stage.AUTH_PENDING and held.auth_state == "error"
    world.clock.advance(minutes=6)
    world.follow_up()
    assert world.request(request.id).checks == 1
