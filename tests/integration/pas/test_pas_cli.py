"""`refloop pas submit|status|reply|inquire` with ids that do not exist: an error and a non-zero
exit, never queued work that fails eight times; a queued submission for a referral that is gone is
rejected at once. Request ids, like referral ids, may be given by a unique beginning."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pas_client.flow import new_request
from refloop.context import Context
from refloop.wiring.pas import pas

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pas_world import PAYER, World, close_world, make_world, world_fixture  # noqa: F401


def invoke(world: World, *args: str) -> tuple[int, str]:
    context = Context(None)
    context._settings = world.services.settings
    context._services = world.services
    result = CliRunner().invoke(pas, list(args), obj=context)
    return result.exit_code, result.output


def test_submit_and_status_of_an_unknown_referral_are_errors(world: World) -> None:
    before = world.services.work.counts()
    for command in ("submit", "status"):
        code, output = invoke(world, command, "no-such-referral")
        assert code == 1, output
        assert "no referral no-such-referral" in output and "refloop referrals list" in output
    assert world.services.work.counts() == before    # nothing was queued
    code, output = invoke(world, "reply", "999999")
    assert code == 1 and "no payer reply 999999" in output


def test_submit_with_an_unknown_payer_is_an_error(world: World) -> None:
    referral = world.referral()
    code, output = invoke(world, "submit", referral.id, "--payer", "Nobody Health")
    assert code == 1 and "no [[payers]] entry named 'Nobody Health'" in output
    code, output = invoke(world, "submit", referral.id)   # the referral's payer
    assert code == 0 and "Blue Horizon" in output


def test_queued_work_for_a_referral_that_is_gone_fails_once(world: World) -> None:
    world.services.work.enqueue("pas.submit", {"referral_id": "gone", "payer": "Blue Horizon"},
                                key="gone")
    world.run()
    [entry] = world.services.quarantine.list()
    assert "no referral gone" in entry.reason
    assert world.services.work.counts().get("quarantined") == 1
    item = world.services.work.try_get(entry.work_item_id)
    assert item is not None and item["attempts"] == 1     # rejected, not retried


def test_a_queued_submission_to_an_unknown_payer_is_blocked_with_the_reason(world: World
                                                                           ) -> None:
    referral = world.referral()
    world.flow.enqueue_submit(referral.id, "Nobody Health")
    world.run()
    [request] = world.store.for_referral(referral.id)
    assert request.status == "blocked"
    assert "no [[payers]] entry named 'Nobody Health'" in request.findings[0]["message"]
    code, output = invoke(world, "status", referral.id)
    assert code == 0 and "blocked" in output and "Nobody Health" in output


@pytest.fixture(name="sandbox")
def sandbox_fixture(database_url: str, tmp_path: Path) -> Iterator[World]:
    made = make_world("sandbox", database_url, tmp_path)
    yield made
    close_world(made)


def test_inquire_and_cancel_take_the_short_request_id_status_prints(sandbox: World) -> None:
    sandbox.payer.answer("bundle", code="A4")
    request = sandbox.submit(sandbox.referral())
    code, output = invoke(sandbox, "inquire", request.id[:8])
    assert code == 0 and f"request {request.id}: pended" in output, output
    code, output = invoke(sandbox, "cancel", request.id[:8])
    assert code == 0 and "cancel request " in output, output
    assert [r.kind for r in sandbox.store.for_referral(request.referral_id)] == [
        "submit", "cancel"]


def test_an_ambiguous_or_unknown_request_id_is_an_error_listing_the_candidates(
        sandbox: World) -> None:
    referral = sandbox.referral()
    for suffix in ("0000", "1111"):
        sandbox.store.add(new_request(f"abcd1234-{suffix}", referral.id, PAYER, "submit",
                                      f"abcd1234-{suffix}", None, 1, {}, f"b-{suffix}", "",
                                      "blocked", []))
    code, output = invoke(sandbox, "inquire", "abcd1234")
    assert code == 1 and ("abcd1234 is ambiguous: 2 prior-authorization request ids begin "
                          "with it (abcd1234-0000, abcd1234-1111)") in output, output
    code, output = invoke(sandbox, "inquire", "abcd9")
    assert code == 1 and "no prior-authorization request abcd9" in output, output
