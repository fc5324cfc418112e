"""Which referrals need authorization, and eligibility first: when a referral arrives Refloop
asks the payer's eligibility endpoint and its CRD service (CDS Hooks order-sign) and applies the
coverage-requirements table; the answer and its source are stored and shown, and an accepted
referral waits for authorization only when it is required. On SQLite and PostgreSQL, against the
PAYER SANDBOX and the OTHER PAYER (both fakes with a CRD service: a payer cannot run here)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from referrals.model import Actor, Command, Stage
from refloop.cli import referrals_show
from refloop.context import Context
from refloop.wiring.pas import pas

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pas_world import World, close_world, make_world

COORDINATOR = Actor("PractitionerRole/c1", "Casey", "human")
CRD_EXT = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"


def asks_everything(url: str) -> dict[str, Any]:
    return {"eligibility": True, "crd_url": f"{url}/cds-services"}


@pytest.fixture(params=["sandbox", "other"])
def asking(request: pytest.FixtureRequest, database_url: str, tmp_path: Path
           ) -> Iterator[World]:
    made = make_world(request.param, database_url, tmp_path, asks_everything)
    yield made
    close_world(made)


def say_pa_needed(world: World, value: str) -> None:
    payer: Any = world.payer
    if payer.kind == "sandbox":
        payer.server.state.rules.pa_needed = value
    else:
        payer.payer.crd_pa_needed = value


def invoke(world: World, command: Any, *args: str) -> str:
    context = Context(None)
    context._settings = world.services.settings
    context._services = world.services
    result = CliRunner().invoke(command, list(args), obj=context)
    assert result.exit_code == 0, result.output
    return result.output


def test_eligibility_and_crd_are_asked_when_the_referral_arrives(asking: World) -> None:
    referral = asking.referral(accept=False)
    asking.run()
    found = asking.store.coverage(referral.id)
    assert found is not None and found["requirement"] == "required"
    assert "CRD (order-sign): covered covered, pa-needed auth-needed" in found["source"]
    eligibility = found["eligibility"]
    assert eligibility["active"] is True and eligibility["in_network"] is True
    assert eligibility["auth_required"] is True and eligibility["plan"]
    operations = [r.operation for r in asking.store.replies(referral_id=referral.id)]
    assert operations == ["eligibility", "crd-discovery", "crd"]
    held = asking.services.store.get(referral.id)
    assert held.stage == Stage.DETECTED and held.auth_state == "required"
    shown = invoke(asking, referrals_show, referral.id)
    assert "Coverage and eligibility" in shown and "authorization required" in shown
    assert f"coverage active, plan {eligibility['plan']}, in network" in shown
    assert "Prior authorization: auth-needed" in invoke(asking, pas, "coverage", referral.id)


def test_required_means_the_accepted_referral_waits_and_crd_goes_into_pas(asking: World
                                                                         ) -> None:
    referral = asking.referral(accept=False)
    asking.run()
    accepted = asking.services.referrals.act(referral.id, Command("accept", actor=COORDINATOR))
    asking.run()
    waiting = asking.services.store.get(accepted.id)
    assert waiting.stage == Stage.AUTH_PENDING and waiting.auth_state == "required"
    last = asking.services.store.events(referral.id)[-1]
    assert last.action == "request-authorization" and last.reason is not None
    assert "CRD" in last.reason.text
    # the PAS request carries the payer's coverage-information (CRD resp-46)
    asking.flow.enqueue_submit(referral.id, "Blue Horizon")
    asking.run()
    [request] = asking.store.for_referral(referral.id)
    order = next(e["resource"] for e in request.bundle_json()["entry"]
                 if e["resource"]["resourceType"] == "ServiceRequest")
    [information] = order["extension"]
    assert information["url"] == CRD_EXT and request.status == "approved"


def test_not_required_means_the_referral_goes_on(asking: World) -> None:
    say_pa_needed(asking, "no-auth")
    referral = asking.referral(accept=False)
    asking.run()
    asking.services.referrals.act(referral.id, Command("accept", actor=COORDINATOR))
    asking.run()
    held = asking.services.store.get(referral.id)
    assert held.stage == Stage.ACCEPTED and held.auth_state == "not-required"
    gate = asking.flow.coverage.authorization_gate(referral.id)  # type: ignore[attr-defined]
    assert gate["requirement"] == "not-required" and gate["waiting"] is False
    moved = asking.services.referrals.act(referral.id, Command("start-outreach",
                                                               actor=COORDINATOR))
    assert moved.stage == Stage.OUTREACH       # the ladder may start


def test_an_indeterminate_crd_answer_falls_back_to_the_table(asking: World) -> None:
    say_pa_needed(asking, "conditional")
    referral = asking.referral(accept=False)
    asking.run()
    found = asking.store.coverage(referral.id)
    assert found is not None
    # the eligibility answer is definite (authorizationRequired) and comes before the table
    assert found["requirement"] == "required" and "eligibility answer" in found["source"]


def test_auto_submit_sends_the_request_when_required(database_url: str, tmp_path: Path
                                                     ) -> None:
    world = make_world("sandbox", database_url, tmp_path, lambda url: {
        "crd_url": f"{url}/cds-services", "auto_submit": True})
    try:
        referral = world.referral()             # detected and accepted
        world.run()
        [request] = world.store.for_referral(referral.id)
        assert request.status == "approved"
        assert world.services.store.get(referral.id).stage == Stage.OUTREACH
    finally:
        close_world(world)


@pytest.mark.parametrize(("rules", "default", "expected", "source"), [
    ([{"specialties": ["cardiology"], "authorization": "required"}], "unknown", "required",
     "coverage rule 1"),
    ([{"services": ["99999"], "authorization": "required"}], "not-required", "not-required",
     "its default"),
    ([{"services": ["306235009"], "plans": ["GOLD"], "authorization": "required"},
      {"services": ["306235009"], "authorization": "not-required"}], "unknown", "not-required",
     "coverage rule 2"),
])
def test_the_coverage_requirements_table(database_url: str, tmp_path: Path,
                                         rules: list[dict[str, Any]], default: str,
                                         expected: str, source: str) -> None:
    world = make_world("other", database_url, tmp_path, lambda _url: {
        "coverage_rules": rules, "default_authorization": default})
    try:
        referral = world.referral(accept=False)   # DEMO[0]: cardiology, SNOMED 306235009
        world.run()
        found = world.store.coverage(referral.id)
        assert found is not None
        assert (found["requirement"], source in found["source"]) == (expected, True)
        assert world.services.store.get(referral.id).auth_state == expected
        assert [r.operation for r in world.store.replies(referral_id=referral.id)] == []
    finally:
        close_world(world)


def test_inactive_coverage_and_out_of_network_are_shown(asking: World) -> None:
    payer: Any = asking.payer
    if payer.kind == "sandbox":
        payer.server.state.rules.eligibility_active = False
    else:
        payer.payer.eligibility = {**payer.payer.eligibility, "inforce": False,
                                   "network": "out"}
    referral = asking.referral(accept=False)
    asking.run()
    found = asking.store.coverage(referral.id)
    assert found is not None and found["eligibility"]["active"] is False
    if payer.kind == "other":
        assert found["eligibility"]["in_network"] is False
    data = json.loads(invoke(asking, pas, "coverage", referral.id, "--json"))
    assert data["eligibility"]["active"] is False
    assert "coverage not active" in invoke(asking, pas, "coverage", referral.id)


def test_a_refused_eligibility_request_is_kept_and_the_check_goes_on(database_url: str,
                                                                    tmp_path: Path) -> None:
    """Only the other payer refuses eligibility requests (the sandbox always answers)."""
    world = make_world("other", database_url, tmp_path, lambda url: {
        "eligibility": True, "coverage_rules": [{"authorization": "not-required"}]})
    try:
        world.payer.payer.eligibility_status = 400  # type: ignore[union-attr]
        referral = world.referral(accept=False)
        world.run()
        found = world.store.coverage(referral.id)
        assert found is not None and "member id missing" in found["eligibility"]["error"]
        assert found["requirement"] == "not-required" and "rule 1" in found["source"]
        [reply] = world.store.replies(referral_id=referral.id)
        assert reply.operation == "eligibility" and reply.interpretation == "rejected"
    finally:
        close_world(world)
