"""Every payer reply is kept raw before it is read, and every shape payers send is read or kept
as an error followed by a scheduled $inquire: on SQLite and PostgreSQL, against the PAYER SANDBOX
and against the OTHER PAYER written for the tests (both fakes: a payer cannot run here)."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from referrals.model import Stage
from refloop.cli import referrals_show
from refloop.context import Context
from refloop.wiring.pas import pas

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pas_world import World, world_fixture  # noqa: F401 (fixture)


def cli(world: World, *args: str) -> tuple[int, str]:
    context = Context(None)
    context._settings = world.services.settings
    context._services = world.services
    result = CliRunner().invoke(pas, list(args), obj=context)
    return result.exit_code, result.output


def show(world: World, referral_id: str, *args: str) -> str:
    """`refloop referrals show REFERRAL` output."""
    context = Context(None)
    context._settings = world.services.settings
    context._services = world.services
    result = CliRunner().invoke(referrals_show, [referral_id, *args], obj=context)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_reply_is_kept_raw_with_status_and_headers(world: World) -> None:
    referral = world.referral()
    request = world.submit(referral)
    assert request.status == "approved"
    [reply] = world.store.replies(request_id=request.id)
    assert reply.body == world.payer.last_sent()       # the exact bytes the payer sent
    assert reply.http_status == 200 and reply.operation == "submit"
    assert reply.referral_id == referral.id and reply.interpretation == "decision"
    assert "fhir+json" in reply.headers["Content-Type"]


@pytest.mark.parametrize("shape", ["bare", "not-first"])
def test_a_decision_in_another_shape_is_read(world: World, shape: str) -> None:
    """A bare ClaimResponse (several payers answer so) and a Bundle whose ClaimResponse is
    not first: the approval is applied, and the deviation is noted on the kept reply."""
    world.payer.answer(shape)
    referral = world.referral()
    request = world.submit(referral)
    assert request.status == "approved" and request.auth_number
    assert world.services.store.get(referral.id).stage == Stage.OUTREACH
    [reply] = world.store.replies(request_id=request.id)
    assert reply.interpretation == "decision" and "IG" in reply.note


@pytest.mark.parametrize("shape", ["malformed", "operation-outcome"])
def test_an_unreadable_reply_is_an_error_kept_visible_and_inquired(world: World,
                                                                   shape: str) -> None:
    world.payer.answer(shape)
    referral = world.referral()
    request = world.submit(referral)
    [reply] = world.store.replies(request_id=request.id)
    assert request.status == "error" and f"#{reply.id}" in request.last_error
    assert reply.interpretation == "uninterpretable" and reply.body == world.payer.last_sent()
    # visible: the CLI lists it and shows it in full; the referral waits for authorization
    code, output = cli(world, "status", referral.id)
    assert code == 0 and "uninterpretable" in output and "error" in output
    code, output = cli(world, "reply", str(reply.id))
    assert code == 0 and world.payer.last_sent().decode("utf-8", "replace") in output
    shown = show(world, referral.id)
    assert "Prior authorization" in shown and "Payer replies" in shown
    replies = shown.split("Payer replies", 1)[1]
    row = next(line for line in replies.splitlines() if line.startswith(f"{reply.id} "))
    assert "submit" in row and "200" in row and "uninterpretable" in row
    data = json.loads(show(world, referral.id, "--json"))
    [kept] = [r for r in data["payer_replies"] if r["id"] == reply.id]
    assert world.payer.last_sent().decode("utf-8", "replace")[:200] in kept["body"]
    moved = world.services.store.get(referral.id)
    assert moved.stage == Stage.AUTH_PENDING and moved.auth_state == "error"
    # an $inquire is scheduled soon (not the hour of a pend), and it finds the approval
    assert request.next_check_at is not None
    assert request.next_check_at - world.clock() < timedelta(minutes=6)
    world.clock.advance(minutes=6)
    world.follow_up()
    done = world.request(request.id)
    assert done.status == "approved" and done.next_check_at is None
    assert [r.operation for r in world.store.replies(request_id=request.id)] == \
        ["submit", "inquire"]
    assert world.services.store.get(referral.id).stage == Stage.OUTREACH


def test_a_reply_about_items_the_request_lacks_is_not_applied(world: World) -> None:
    world.payer.answer("foreign-items")
    referral = world.referral()
    request = world.submit(referral)
    assert request.status == "error" and request.auth_number == ""
    assert "item sequences" in request.last_error and "[1]" in request.last_error
    assert world.services.store.get(referral.id).stage == Stage.AUTH_PENDING
    assert request.next_check_at is not None


def test_contact_payer_is_its_own_state_and_goes_to_the_coordinator(world: World) -> None:
    world.payer.answer("bundle", code="CT")
    referral = world.referral()
    request = world.submit(referral)
    assert request.status == "contact-payer" and request.escalated_at is not None
    held = world.services.store.get(referral.id)
    assert held.stage == Stage.AUTH_PENDING and held.auth_state == "contact-payer"
    last = world.services.store.events(referral.id)[-1]
    assert last.reason is not None and "contacted" in last.reason.text
    task = world.services.resources.try_get("Task", request.task_id, server="local")
    assert task["status"] == "on-hold" and "contact" in task["statusReason"]["text"]


def test_other_outcomes_keep_their_names(world: World) -> None:
    world.payer.answer("bundle", code="NA")
    referral = world.referral()
    request = world.submit(referral)
    assert request.status == "no-auth-required"
    moved = world.services.store.get(referral.id)
    assert moved.stage == Stage.OUTREACH and moved.auth_state == "no-auth-required"


def test_status_json_lists_requests_and_replies(world: World) -> None:
    referral = world.referral()
    request = world.submit(referral)
    code, output = cli(world, "status", referral.id, "--json")
    data = json.loads(output)
    assert code == 0 and data["requests"][0]["id"] == request.id
    assert data["replies"][0]["http_status"] == 200
