"""A careless or hostile payer: a reply about another claim, ClaimResponses that contradict each
other or themselves, a decision taken back after the referral moved on, a notification from an
endpoint that serves several payers, a second submit of the same order, a Patient with our
identifier and another name (held as an entry or contained). On SQLite and
PostgreSQL, against the OTHER PAYER written for the tests (a fake: a payer cannot run here)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from referrals.model import Stage
from refloop.cli import referrals
from refloop.context import Context
from refloop.services import build_services
from refloop.settings import Settings
from refloop.wiring.pas import pas

sys.path.insert(0, str(Path(__file__).resolve().parent))

from other_payer import PAS_EXT, X12_306
from pas_world import PAYER, Clock, World, close_world, make_world
from payers import OtherPayerUnderTest, notification_payload, start_payer


@pytest.fixture(name="other")
def other_fixture(database_url: str, tmp_path: Path) -> Iterator[World]:
    made = make_world("other", database_url, tmp_path)
    yield made
    close_world(made)


def hostile(world: World) -> OtherPayerUnderTest:
    assert isinstance(world.payer, OtherPayerUnderTest)
    return world.payer


def review_action(code: str) -> dict[str, Any]:
    return {"category": {"coding": [{"code": "submitted"}]}, "extension": [{
        "url": PAS_EXT + "extension-reviewAction", "extension": [{
            "url": PAS_EXT + "extension-reviewActionCode",
            "valueCodeableConcept": {"coding": [{"system": X12_306, "code": code}]}}]}]}


def decided(claim_response: dict[str, Any], code: str) -> dict[str, Any]:
    return {**claim_response, "item": [{**item, "adjudication": [review_action(code)]}
                                       for item in claim_response["item"]]}


def assert_not_applied(world: World, referral_id: str, why: str) -> None:
    [request] = world.store.for_referral(referral_id)
    assert request.status == "error" and why in request.last_error
    assert request.next_check_at is not None            # followed with $inquire
    [reply] = world.store.replies(request_id=request.id)
    assert reply.interpretation == "uninterpretable" and why in reply.note
    referral = world.services.store.get(referral_id)
    assert referral.stage == Stage.AUTH_PENDING and referral.auth_state == "error"


def test_an_approval_for_another_claim_and_patient_is_not_applied(other: World) -> None:
    hostile(other).payer.rewrite = lambda cr: [{
        **cr, "request": {"reference": "Claim/other-claim-9",
                          "identifier": {"system": "urn:trnorg:OTHER", "value": "OTHER-1"}},
        "identifier": [{"system": "urn:trnorg:OTHER", "value": "OTHER-1"}],
        "patient": {"reference": "Patient/someone-else"}}]
    referral = other.referral()
    other.submit(referral)
    assert_not_applied(other, referral.id, "answers another claim (Claim/other-claim-9")


def test_our_claim_named_relatively_by_its_id_is_applied(other: World) -> None:
    """`Claim/<id>` (as the IG's examples write it) names our Claim too."""
    def relative(cr: dict[str, Any]) -> list[dict[str, Any]]:
        claim = other.payer.payer.claims[cr["request"]["reference"]]["resource"]
        return [{**cr, "request": {"reference": f"Claim/{claim['id']}"}}]
    hostile(other).payer.rewrite = relative
    assert other.submit(other.referral()).status == "approved"


def test_claim_responses_that_contradict_each_other_are_not_applied(other: World) -> None:
    hostile(other).payer.rewrite = lambda cr: [decided(cr, "A1"), decided(cr, "A3")]
    referral = other.referral()
    other.submit(referral)
    assert_not_applied(other, referral.id, "contradict each other")


@pytest.mark.parametrize(("header", "items", "why"), [
    ("A3", "A1", "its header decision (A3) contradicts its items (1:A1)"),
    ("", "twice", "item 1 is decided twice (A1, A3)"),
])
def test_a_claim_response_that_contradicts_itself_is_not_applied(
        other: World, header: str, items: str, why: str) -> None:
    def contradicting(cr: dict[str, Any]) -> list[dict[str, Any]]:
        if items == "twice":
            [item] = cr["item"]
            cr["item"] = [{**item, "adjudication": [review_action(c)]} for c in ("A1", "A3")]
        else:
            cr = decided(cr, items)
        if header:
            cr["adjudication"] = [review_action(header)]
        return [cr]
    hostile(other).payer.rewrite = contradicting
    referral = other.referral()
    other.submit(referral)
    assert_not_applied(other, referral.id, why)


def test_a_denial_after_the_approval_stops_the_referral(other: World) -> None:
    referral = other.referral()
    request = other.submit(referral)
    assert request.status == "approved"
    assert other.services.store.get(referral.id).stage == Stage.OUTREACH
    hostile(other).release("A3")
    other.flow.inquire(request)
    after = other.request(request.id)
    assert after.status == "denied" and after.auth_number == ""
    moved = other.services.store.get(referral.id)
    assert moved.stage == Stage.ON_HOLD and moved.auth_state == "denied"
    assert moved.status_reason is not None and "now denies" in moved.status_reason.text


def cli_submit(world: World, referral_id: str) -> tuple[int, str]:
    context = Context(None)
    context._settings = world.services.settings
    context._services = world.services
    result = CliRunner().invoke(pas, ["submit", referral_id], obj=context)
    return result.exit_code, result.output


def test_a_second_submit_is_not_sent(other: World) -> None:
    hostile(other).answer("bundle", code="A4")
    referral = other.referral()
    first = other.submit(referral)                 # pended
    other.flow.enqueue_submit(referral.id, PAYER)  # the button pressed again
    other.run()
    assert [r.id for r in other.store.for_referral(referral.id)] == [first.id]
    code, output = cli_submit(other, referral.id)
    assert code == 1 and f"request {first.id} is pended" in output
    submits = [p for p, _ in hostile(other).payer.received if p == "/Claim/$submit"]
    assert len(submits) == 1
    other.flow.enqueue_submit(referral.id, PAYER, again=True)  # the coordinator's resubmit
    other.run()
    assert len(other.store.for_referral(referral.id)) == 2


def shared_endpoint_world(database_url: str, tmp_path: Path) -> World:
    """Two [[payers]] behind one endpoint (an intermediary serving several payers); ours is
    the second."""
    started = start_payer("other")
    entry = {"base_url": started.url, "version": "2.2.1", "subscribe": False,
             "timeout_seconds": 5}
    settings = Settings(var_dir=tmp_path / "var", database_url=database_url, sections={
        "pas": {"organization_name": "Refloop Clinic", "organization_npi": "1234567893",
                "organization_tin": "123456789"},
        "payers": [{**entry, "name": "Acme Clearing", "payer_id": "AC01"},
                   {**entry, "name": PAYER, "payer_id": "BH0042"}]})
    services = build_services(settings)
    clock = Clock()
    services.adapters["pas"].now = clock
    return World(services, started, clock)


@pytest.mark.parametrize("shape", ["nested", "flattened"])
def test_a_notification_from_an_endpoint_several_payers_share_is_applied(
        database_url: str, tmp_path: Path, shape: str) -> None:
    world = shared_endpoint_world(database_url, tmp_path)
    try:
        payer = hostile(world)
        payer.answer("bundle", code="A4")
        referral = world.referral()
        request = world.submit(referral)
        assert request.status == "pended"
        payer.release("A1")
        world.services.work.enqueue("pas.notification", notification_payload(
            payer.url, payer.notification(shape)), key="shared-endpoint")
        world.run()
        assert world.request(request.id).status == "approved"
        assert world.services.store.get(referral.id).stage == Stage.OUTREACH
    finally:
        close_world(world)


def test_an_inquire_answer_about_another_claim_is_shown_as_not_applied(other: World) -> None:
    hostile(other).answer("bundle", code="A4")
    referral = other.referral()
    request = other.submit(referral)
    current = hostile(other).payer.current()
    current["request"] = {"reference": "Claim/other-claim-9",
                          "identifier": {"system": "urn:trnorg:OTHER", "value": "OTHER-1"}}
    current["item"] = decided(current, "A3")["item"]
    context = Context(None)
    context._settings = other.services.settings
    context._services = other.services
    result = CliRunner().invoke(pas, ["inquire", request.id], obj=context)
    assert result.exit_code == 0, result.output
    assert "denied (1:A3) (no request of ours: not applied)" in result.output
    assert f"request {request.id}: pended" in result.output
    assert other.request(request.id).status == "pended"


def our_patient(world: World) -> tuple[str, dict[str, Any]]:
    """The Claim's patient reference and the Patient entry of the last request received."""
    bundle = [b for path, b in hostile(world).payer.received if path == "/Claim/$submit"][-1]
    reference = bundle["entry"][0]["resource"]["patient"]["reference"]
    [patient] = [e["resource"] for e in bundle["entry"] if e["fullUrl"] == reference]
    return reference, patient


def test_an_approval_of_our_claim_for_another_patient_is_quarantined(other: World) -> None:
    hostile(other).payer.rewrite = lambda cr: [{
        **cr, "patient": {"reference": "Patient/someone-else"}}]
    referral = other.referral()
    other.submit(referral)
    assert_not_applied(other, referral.id, "another patient (Patient/someone-else)")
    [entry] = other.services.quarantine.list()
    assert entry.kind == "pas.claim-response" and "Patient/someone-else" in entry.reason
    assert json.loads(entry.original)["patient"]["reference"] == "Patient/someone-else"


@pytest.mark.parametrize(("patient", "why"), [
    (None, "names no patient"),
    ({"identifier": {"system": "urn:other-clinic:mrn", "value": "*ours*"}},
     "another patient (a patient named by identifier only)"),
])
def test_a_decision_not_shown_to_be_our_patients_is_quarantined(
        other: World, patient: dict[str, Any] | None, why: str) -> None:
    """No patient (unit tests: a display only), or our member id's value under another assigner."""
    def rewrite(cr: dict[str, Any]) -> list[dict[str, Any]]:
        named = {k: v for k, v in cr.items() if k != "patient"}
        if patient is not None and "identifier" in patient:
            value = our_patient(other)[1]["identifier"][0]["value"]
            named["patient"] = {"identifier": {**patient["identifier"], "value": value}}
        elif patient is not None:
            named["patient"] = patient
        return [named]
    hostile(other).payer.rewrite = rewrite
    referral = other.referral()
    other.submit(referral)
    assert_not_applied(other, referral.id, why)
    [entry] = other.services.quarantine.list()
    assert entry.kind == "pas.claim-response" and why in entry.reason


@pytest.mark.parametrize("named", ["relative", "member-id"])
def test_our_patient_named_another_way_is_applied(other: World, named: str) -> None:
    """`Patient/<id>` of our Patient, or the payer's own Patient id with our member id."""
    def renamed(cr: dict[str, Any]) -> list[dict[str, Any]]:
        _, patient = our_patient(other)
        if named == "relative":
            return [{**cr, "patient": {"reference": f"Patient/{patient['id']}"}}]
        return [{**cr, "patient": {"reference": "Patient/payer-77",
                                   "identifier": patient["identifier"][0]}}]
    hostile(other).payer.rewrite = renamed
    assert other.submit(other.referral()).status == "approved"
    assert other.services.quarantine.list() == []


def test_a_notified_decision_for_another_patient_is_not_applied(other: World) -> None:
    payer = hostile(other)
    payer.answer("bundle", code="A4")
    referral = other.referral()
    request = other.submit(referral)
    assert request.status == "pended"
    payer.release("A1")
    payer.payer.current()["patient"] = {"reference": "Patient/someone-else"}
    other.services.work.enqueue("pas.notification", notification_payload(
        payer.url, payer.notification("nested")), key="other-patient")
    other.run()
    after = other.request(request.id)
    assert after.status == "error" and "another patient" in after.last_error
    assert other.services.store.get(referral.id).stage == Stage.AUTH_PENDING
    [entry] = other.services.quarantine.list()
    assert entry.kind == "pas.claim-response" and request.id[:8] in entry.reason


def with_patient(cr: dict[str, Any], shape: str, patient: dict[str, Any]) -> list[dict[str, Any]]:
    """The ClaimResponse naming `patient`, held as a Bundle entry after it or contained in it."""
    held = {**patient, "id": "payer-p1"}
    if shape == "contained":
        return [{**cr, "contained": [held], "patient": {"reference": "#payer-p1"}}]
    return [{**cr, "patient": {"reference": "Patient/payer-p1"}}, held]


@pytest.mark.parametrize("shape", ["entry", "contained"])
def test_a_patient_with_our_identifier_and_another_name_is_quarantined(
        other: World, shape: str) -> None:
    """Our member id on a Patient with another family name and birth date: a payer that mixed
    up its members. Held as a Bundle entry or contained, it is the same mismatch."""
    def renamed(cr: dict[str, Any]) -> list[dict[str, Any]]:
        _, ours = our_patient(other)
        return with_patient(cr, shape, {"resourceType": "Patient",
                                        "identifier": ours["identifier"],
                                        "name": [{"family": "Someone-Else", "given": ["Ann"]}],
                                        "birthDate": "1931-01-01"})
    hostile(other).payer.rewrite = renamed
    referral = other.referral()
    other.submit(referral)
    why = "has another family name and birth date than the request's Patient"
    assert_not_applied(other, referral.id, why)
    [entry] = other.services.quarantine.list()
    assert entry.kind == "pas.claim-response" and "a patient mismatch" in entry.reason
    assert why in entry.reason and "Someone-Else" not in entry.reason


@pytest.mark.parametrize("shape", ["entry", "contained"])
def test_our_patient_held_in_the_reply_is_applied(other: World, shape: str) -> None:
    def echoed(cr: dict[str, Any]) -> list[dict[str, Any]]:
        return with_patient(cr, shape, our_patient(other)[1])
    hostile(other).payer.rewrite = echoed
    assert other.submit(other.referral()).status == "approved"
    assert other.services.quarantine.list() == []


def cli_show(world: World, referral_id: str, *args: str, columns: int | None = None) -> str:
    context = Context(None)
    context._settings = world.services.settings
    context._services = world.services
    result = CliRunner().invoke(referrals, ["show", referral_id, *args], obj=context,
                                env={"COLUMNS": str(columns) if columns else None})
    assert result.exit_code == 0, result.output
    return result.output


ERRORS = [{"code": {"coding": [{"system": "https://codesystem.x12.org/005010/901",
                                "code": "57", "display": "Invalid date of service"}]}},
          {"code": {"coding": [{"system": "https://codesystem.x12.org/005010/901",
                                "code": "T4"}]}, "extension": [
              {"url": PAS_EXT + "extension-errorPath",
               "valueString": "Bundle.entry[0].resource.item[0].servicedDate"}]}]


def errors_instead(cr: dict[str, Any]) -> list[dict[str, Any]]:
    """The payer's answer is errors, not a decision (HTTP 200, outcome error)."""
    bare = {k: v for k, v in cr.items() if k != "item"}
    return [{**bare, "outcome": "error", "error": ERRORS,
             "disposition": "Request rejected: date of service"}]


def denied_because(cr: dict[str, Any]) -> list[dict[str, Any]]:
    action = review_action("A3")
    action["extension"][0]["extension"].append({"url": "reasonCode", "valueCodeableConcept": {
        "coding": [{"system": "https://codesystem.x12.org/005010/4000", "code": "0U"}]}})
    return [{**cr, "disposition": "Not medically necessary",
             "item": [{**i, "adjudication": [action]} for i in cr["item"]]}]


@pytest.mark.parametrize(("answer", "status", "code", "said"), [
    (errors_instead, "rejected", "auth-rejected",
     ["error 57 Invalid date of service", "error T4 at Bundle.entry[0].resource.item[0]."
      "servicedDate", "Request rejected: date of service"]),
    (denied_because, "denied", "auth-denied", ["reason 0U", "Not medically necessary"]),
])
def test_a_refusal_inside_the_claim_response_is_the_events_reason(
        other: World, answer: Any, status: str, code: str, said: list[str]) -> None:
    """HTTP 200 with a ClaimResponse that rejects (errors) or denies: the payer's error codes,
    review reason codes and disposition are the reason on the referral's event, on the request
    (its problem) and its Task, and `referrals show` shows them, as for a refusal by HTTP 4xx."""
    hostile(other).payer.rewrite = answer
    referral = other.referral()
    request = other.submit(referral)
    assert request.status == status
    reason = other.services.store.events(referral.id)[-1].reason
    assert reason is not None and reason.code == code
    assert all(words in reason.text for words in said[:2]), reason.text
    assert all(words in request.last_error for words in said), request.last_error
    task = other.services.resources.try_get("Task", request.task_id, server="local")
    assert task is not None and task["statusReason"]["text"] == request.last_error
    shown = json.loads(cli_show(other, referral.id, "--json"))
    assert shown["events"][-1]["reason"] == {"code": code, "text": reason.text}
    assert shown["prior_authorization"][0]["problem"] == request.last_error
    assert code in cli_show(other, referral.id)


def test_referrals_show_prints_the_whole_problem(other: World) -> None:
    """The request's problem is longer than a line: printed whole (on one line into a pipe,
    wrapped to the terminal's width when the output has one), and whole in --json."""
    hostile(other).payer.rewrite = errors_instead
    referral = other.referral()
    problem = other.submit(referral).last_error
    assert len(problem) > 200
    piped = cli_show(other, referral.id).split("Prior authorization", 1)[1]
    assert problem in piped
    wrapped = cli_show(other, referral.id, columns=140).split("Prior authorization", 1)[1]
    table = wrapped.split("\n\n", 1)[0].splitlines()[1:]
    assert all(len(line) <= 140 for line in table) and len(table) > 3
    start = table[0].index("problem")
    assert " ".join(line[start:].strip() for line in table[2:]) == problem
    shown = json.loads(cli_show(other, referral.id, "--json", columns=100))
    assert shown["prior_authorization"][0]["problem"] == problem
