"""The PAS request builder fills what payers need, and its output passes the pre-flight check:
dated orders (PAS Timing, item.servicedDate/servicedPeriod), the requested performer as
careTeam, the order's quantity (a multi-visit order keeps its count), the subscriber and
relationship from the Coverage (a child dependent is not the subscriber); every demo referral
and every ServiceRequest example in fixtures/ builds without a check error."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pas_client.bundle import BuiltRequest, build_request_bundle
from pas_client.config import from_settings
from pas_client.conformance import check_bundle
from pas_client.inputs import ClaimInputs, gather_inputs
from refloop.demo_data import demo_resources

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "fixtures"
DEMO = json.loads((FIXTURES / "demo" / "referrals.json").read_text("utf-8"))
CONFIG = from_settings({"organization_name": "Refloop Clinic", "organization_npi": "1234567893",
                        "organization_tin": "123456789"},
                       [{"name": "Blue Horizon", "base_url": "http://127.0.0.1:9",
                         "payer_id": "BH0042"}])
PAYER = CONFIG.payers[0]
NUCC = "http://nucc.org/provider-taxonomy"
X12 = "https://codesystem.x12.org/005010/"

Held = dict[tuple[str, str], dict[str, Any]]


def demo_held(item: dict[str, Any]) -> Held:
    return {(r["resourceType"], r["id"]): r for r in demo_resources(item).values()}


def build(held: Held, order: str) -> tuple[BuiltRequest, ClaimInputs]:
    request = held[("ServiceRequest", order)]
    gathered = gather_inputs("r1", request.get("priority", "routine"),
                             f"ServiceRequest/{order}", request["subject"]["reference"],
                             lambda kind, rid: held.get((kind, rid)))
    assert isinstance(gathered, ClaimInputs), gathered
    return build_request_bundle(gathered, PAYER, CONFIG), gathered


def errors(built: BuiltRequest) -> list[str]:
    found = [*built.findings, *check_bundle(built.bundle)]
    return [f"{f.path}: {f.message}" for f in found if f.severity == "error"]


def entry(built: BuiltRequest, kind: str, rid: str | None = None) -> dict[str, Any]:
    for e in built.bundle["entry"]:
        if e["resource"]["resourceType"] == kind and rid in (None, e["resource"]["id"]):
            resource: dict[str, Any] = e["resource"]
            return resource
    raise AssertionError(f"no {kind} {rid or ''} in the bundle")


def by_url(built: BuiltRequest, reference: str) -> dict[str, Any]:
    found: dict[str, Any] = next(e["resource"] for e in built.bundle["entry"]
                                 if e["fullUrl"] == reference)
    return found


def claim(built: BuiltRequest) -> dict[str, Any]:
    found: dict[str, Any] = built.bundle["entry"][0]["resource"]
    return found


def order(**changes: Any) -> Held:
    held = demo_held(DEMO[0])
    held[("ServiceRequest", DEMO[0]["key"])].update(changes)
    return held


def test_an_order_with_a_date_is_sent_with_the_pas_timing_and_served_date() -> None:
    built, _ = build(order(occurrenceDateTime="2026-03-02T09:30:00-05:00"), DEMO[0]["key"])
    assert errors(built) == []
    assert claim(built)["item"][0]["servicedDate"] == "2026-03-02"
    request = entry(built, "ServiceRequest")
    assert "occurrenceDateTime" not in request
    assert request["occurrenceTiming"] == {"event": ["2026-03-02T09:30:00-05:00"],
                                           "repeat": {"count": 1}}


def test_an_order_with_a_period_is_sent_with_the_served_period() -> None:
    built, _ = build(order(occurrencePeriod={"start": "2026-03-02", "end": "2026-03-31"}),
                     DEMO[0]["key"])
    assert errors(built) == []
    assert claim(built)["item"][0]["servicedPeriod"] == {"start": "2026-03-02",
                                                         "end": "2026-03-31"}
    timing = entry(built, "ServiceRequest")["occurrenceTiming"]
    assert timing["event"] == ["2026-03-02"]
    assert timing["repeat"]["boundsDuration"]["value"] == 30    # days, bounds are Durations


def test_a_period_with_only_an_end_keeps_it_on_the_timing() -> None:
    """An order due by a date, with no start: the window runs from when it was signed
    (authoredOn), else from the day the request is built, to that end."""
    due = {"end": "2026-03-31"}
    signed = order(occurrencePeriod=due, authoredOn="2026-03-02T10:00:00Z")
    unsigned = order(occurrencePeriod=due)
    unsigned[("ServiceRequest", DEMO[0]["key"])].pop("authoredOn", None)
    bounded = order(occurrenceTiming={"repeat": {"frequency": 1, "period": 1, "periodUnit": "wk",
                                                 "boundsPeriod": due}},
                    authoredOn="2026-03-02")
    for held, days in ((signed, 30), (unsigned, 22), (bounded, 30)):
        request = held[("ServiceRequest", DEMO[0]["key"])]
        gathered = gather_inputs("r1", "routine", f"ServiceRequest/{DEMO[0]['key']}",
                                 request["subject"]["reference"],
                                 lambda kind, rid, h=held: h.get((kind, rid)))
        assert isinstance(gathered, ClaimInputs)
        built = build_request_bundle(gathered, PAYER, CONFIG,
                                     now=datetime(2026, 3, 10, 15, tzinfo=UTC))
        assert errors(built) == []
        timing = entry(built, "ServiceRequest")["occurrenceTiming"]
        assert timing["event"] == ["2026-03-02" if days == 30 else "2026-03-10"]
        assert timing["repeat"]["boundsDuration"] == {"value": days, "unit": "days",
                                                      "system": "http://unitsofmeasure.org",
                                                      "code": "d"}
        assert claim(built)["item"][0]["servicedPeriod"] == due
    late, _ = build(order(occurrencePeriod=due, authoredOn="2026-04-02"), DEMO[0]["key"])
    assert "event" not in entry(late, "ServiceRequest")["occurrenceTiming"]
    assert any("ends '2026-03-31' with no start" in f.message for f in late.findings)


def test_a_timing_bounded_by_a_period_becomes_a_duration() -> None:
    timing = {"repeat": {"frequency": 1, "period": 1, "periodUnit": "wk",
                         "boundsPeriod": {"start": "2026-04-01", "end": "2026-04-28"}}}
    built, _ = build(order(occurrenceTiming=timing), DEMO[0]["key"])
    assert errors(built) == []
    sent = entry(built, "ServiceRequest")["occurrenceTiming"]["repeat"]
    assert "boundsPeriod" not in sent and sent["boundsDuration"]["value"] == 28
    assert sent["frequency"] == 1 and "count" not in sent
    assert claim(built)["item"][0]["servicedPeriod"]["end"] == "2026-04-28"


def test_a_multi_visit_order_keeps_its_count() -> None:
    built, _ = build(order(quantityQuantity={"value": 3, "unit": "visits",
                                             "system": "http://unitsofmeasure.org",
                                             "code": "{visit}"},
                           occurrencePeriod={"start": "2026-05-01", "end": "2026-07-31"}),
                     DEMO[0]["key"])
    assert errors(built) == []
    item = claim(built)["item"][0]
    assert item["quantity"] == {"value": 3, "unit": "visits", "system": X12 + "673",
                                "code": "VS"}
    request = entry(built, "ServiceRequest")
    assert request["quantityQuantity"]["value"] == 3
    assert request["occurrenceTiming"]["repeat"]["count"] == 3


def test_a_timing_count_is_the_item_quantity_in_visits() -> None:
    """Six visits ordered as a Timing count, with no quantity: the Claim item's PAS Quantity
    says 6 visits (X12 673 VS), and so does the ServiceRequest's."""
    timing = {"repeat": {"count": 6, "boundsPeriod": {"start": "2026-04-01",
                                                      "end": "2026-05-12"}}}
    built, _ = build(order(occurrenceTiming=timing), DEMO[0]["key"])
    assert errors(built) == []
    six = {"value": 6, "unit": "visits", "system": X12 + "673", "code": "VS"}
    assert claim(built)["item"][0]["quantity"] == six
    request = entry(built, "ServiceRequest")
    assert request["quantityQuantity"] == six
    assert request["occurrenceTiming"]["repeat"]["count"] == 6


@pytest.mark.parametrize(("repeat", "asked", "sent"), [
    ({"count": 2, "countMax": 8}, 8, {"count": 2, "countMax": 8}),
    ({"countMax": 5}, 5, {"count": 1, "countMax": 5}),      # tim-8: a countMax needs a count
    ({"count": 6, "countMax": 4}, 6, {"count": 6, "countMax": 4}),
])
def test_a_timing_count_max_is_the_most_visits_asked_for(
        repeat: dict[str, int], asked: int, sent: dict[str, int]) -> None:
    """"2 to 8 visits": the authorization asks for the 8 the order allows (asking for 2 would
    leave visits 3 to 8 unauthorized); the Timing goes as ordered, with a count of 1 ("at
    least once") where only countMax was given, as R4's tim-8 requires."""
    timing = {"repeat": {**repeat, "boundsDuration": {"value": 90, "unit": "days",
                                                      "system": "http://unitsofmeasure.org",
                                                      "code": "d"}}}
    built, _ = build(order(occurrenceTiming=timing), DEMO[0]["key"])
    assert errors(built) == []
    quantity = {"value": asked, "unit": "visits", "system": X12 + "673", "code": "VS"}
    assert claim(built)["item"][0]["quantity"] == quantity
    request = entry(built, "ServiceRequest")
    assert request["quantityQuantity"] == quantity
    assert {k: request["occurrenceTiming"]["repeat"][k] for k in sent} == sent


def test_the_order_quantity_wins_over_a_timing_count() -> None:
    built, _ = build(order(quantityQuantity={"value": 2, "unit": "visits"},
                           occurrenceTiming={"repeat": {"count": 6}}), DEMO[0]["key"])
    assert claim(built)["item"][0]["quantity"]["value"] == 2


def test_a_quantity_without_a_pas_unit_is_left_out_with_a_warning() -> None:
    built, _ = build(order(quantityQuantity={"value": 12, "unit": "lb"}), DEMO[0]["key"])
    assert errors(built) == [] and "quantity" not in claim(built)["item"][0]
    assert any("'lb' has no X12 673" in f.message for f in built.findings)


def with_performer(held: Held, key: str) -> Held:
    held[("Practitioner", "cardio-1")] = {
        "resourceType": "Practitioner", "id": "cardio-1",
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1972845014"}],
        "name": [{"text": "Dr. Maya Ortiz MD"}]}
    held[("Organization", "heart-center")] = {
        "resourceType": "Organization", "id": "heart-center", "name": "Heart Center",
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1558367219"}],
        "telecom": [{"system": "phone", "value": "555-0100"}]}
    held[("PractitionerRole", "cardio-role")] = {
        "resourceType": "PractitionerRole", "id": "cardio-role",
        "practitioner": {"reference": "Practitioner/cardio-1"},
        "organization": {"reference": "Organization/heart-center"},
        "specialty": [{"coding": [{"system": NUCC, "code": "207RC0000X",
                                   "display": "Cardiovascular Disease Physician"}]}],
        "telecom": [{"system": "phone", "value": "555-0101"}, {"system": "fax"}]}
    held[("ServiceRequest", key)]["performer"] = [
        {"reference": "PractitionerRole/cardio-role"}, {"reference": "Device/echo-7"}]
    return held


def test_the_requested_performer_is_the_care_team() -> None:
    key = DEMO[0]["key"]
    built, _ = build(with_performer(demo_held(DEMO[0]), key), key)
    assert errors(built) == []
    [member] = claim(built)["careTeam"]
    assert member["role"]["coding"][0]["code"] == "SJ"          # X12 98 Service Provider
    assert member["qualification"]["coding"][0] == {"system": X12 + "127",
                                                    "code": "207RC0000X",
                                                    "display": "Cardiovascular Disease Physician"}
    assert claim(built)["item"][0]["careTeamSequence"] == [1]
    role = by_url(built, member["provider"]["reference"])
    assert role["resourceType"] == "PractitionerRole"
    assert role["telecom"] == [{"system": "phone", "value": "555-0101"}]
    practitioner = by_url(built, role["practitioner"]["reference"])
    assert practitioner["name"][0]["family"] == "Ortiz"        # read from name.text
    assert by_url(built, role["organization"]["reference"])["name"] == "Heart Center"
    assert entry(built, "ServiceRequest")["performer"] == [member["provider"]]
    assert any("Device/echo-7 is a Device" in f.message for f in built.findings)


def test_a_practitioner_performer_is_sent_through_a_role() -> None:
    key = DEMO[0]["key"]
    held = with_performer(demo_held(DEMO[0]), key)
    held[("Practitioner", "cardio-1")]["telecom"] = [{"system": "phone", "value": "555-0199"}]
    held[("ServiceRequest", key)]["performer"] = [{"reference": "Practitioner/cardio-1"},
                                                  {"reference": "Organization/heart-center"}]
    built, _ = build(held, key)
    assert errors(built) == []
    first, second = claim(built)["careTeam"]
    role = by_url(built, first["provider"]["reference"])
    assert role["resourceType"] == "PractitionerRole" and role["id"] == "performer-cardio-1"
    assert by_url(built, second["provider"]["reference"])["resourceType"] == "Organization"
    assert [m["sequence"] for m in (first, second)] == [1, 2]


def dependent(held: Held, key: str, with_subscriber: bool = True) -> Held:
    parent = {"resourceType": "Patient", "id": "parent-1",
              "identifier": [{"system": "urn:example:mrn", "value": "P-77"}],
              "name": [{"family": "Nguyen", "given": ["Linh"]}], "gender": "female",
              "birthDate": "1979-06-01"}
    if with_subscriber:
        held[("Patient", "parent-1")] = parent
    coverage = held[("Coverage", key)]
    coverage.update({"subscriber": {"reference": "Patient/parent-1"},
                     "relationship": {"coding": [{
                         "system": "http://terminology.hl7.org/CodeSystem/"
                                   "subscriber-relationship", "code": "child"}]},
                     "identifier": [{"type": {"coding": [{
                         "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                         "code": "MB"}]}, "value": "M38816302-02"}]})
    return held


def test_a_child_dependent_is_not_the_subscriber() -> None:
    key = DEMO[0]["key"]
    built, _ = build(dependent(demo_held(DEMO[0]), key), key)
    assert errors(built) == []
    coverage = entry(built, "Coverage")
    patient_url = claim(built)["patient"]["reference"]
    assert coverage["beneficiary"]["reference"] == patient_url
    assert coverage["subscriber"]["reference"] != patient_url
    subscriber = by_url(built, coverage["subscriber"]["reference"])
    assert subscriber["id"] == "parent-1" and subscriber["name"][0]["family"] == "Nguyen"
    assert subscriber["meta"]["profile"][0].endswith("profile-subscriber")
    codes = {c["system"].rsplit("/", 1)[-1]: c["code"] for c in
             coverage["relationship"]["coding"]}
    assert codes == {"subscriber-relationship": "child", "1069": "19"}
    assert coverage["identifier"][0]["value"] == "M38816302-02"   # the dependent's own id
    assert coverage["subscriberId"] == DEMO[0]["payer"]["member"]


def test_a_dependent_whose_subscriber_we_do_not_hold_is_a_finding() -> None:
    key = DEMO[0]["key"]
    built, _ = build(dependent(demo_held(DEMO[0]), key, with_subscriber=False), key)
    assert any(e.startswith("Coverage.subscriber:") and "child" in e for e in errors(built))


def two_coverages(other_payor: dict[str, Any]) -> tuple[Held, str]:
    """DEMO[0] (Blue Horizon) with another insurer's Coverage listed first on the order."""
    key = DEMO[0]["key"]
    held = demo_held(DEMO[0])
    held[("Coverage", "other-1")] = {
        "resourceType": "Coverage", "id": "other-1", "status": "active",
        "subscriberId": "ACME-999", "beneficiary": {"reference": f"Patient/{key}"},
        "payor": [other_payor]}
    order = held[("ServiceRequest", key)]
    order["insurance"] = [{"reference": "Coverage/other-1"}, *order["insurance"]]
    return held, key


def gather_for(held: Held, key: str, payer: tuple[str, ...]) -> ClaimInputs | list[Any]:
    return gather_inputs("r1", "routine", f"ServiceRequest/{key}", f"Patient/{key}",
                         lambda kind, rid: held.get((kind, rid)), payer=payer)


@pytest.mark.parametrize("payor", [
    {"display": "Acme Health Plan"},
    {"identifier": {"value": "ACME"}},
    {"reference": "Organization/acme"},
])
def test_of_several_coverages_the_payers_own_is_sent(payor: dict[str, Any]) -> None:
    held, key = two_coverages(payor)
    held[("Organization", "acme")] = {"resourceType": "Organization", "id": "acme",
                                      "name": "Acme Health Plan"}
    gathered = gather_for(held, key, ("Blue Horizon", "BH0042"))
    assert isinstance(gathered, ClaimInputs) and gathered.coverage is not None
    assert gathered.coverage["id"] == key                      # not Acme's
    built = build_request_bundle(gathered, PAYER, CONFIG)
    assert errors(built) == [] and "ACME-999" not in json.dumps(built.bundle)


def test_several_coverages_none_of_the_payer_is_a_finding() -> None:
    held, key = two_coverages({"display": "Acme Health Plan"})
    gathered = gather_for(held, key, ("State Medicaid", "MCD-ST"))
    assert isinstance(gathered, ClaimInputs) and gathered.coverage is None
    [finding] = [f for f in gathered.findings if f.severity == "error"]
    assert finding.path == "ServiceRequest.insurance" and "2 coverages" in finding.message


@pytest.mark.parametrize("item", DEMO, ids=[i["key"] for i in DEMO])
def test_every_demo_referral_builds_without_a_check_error(item: dict[str, Any]) -> None:
    held = demo_held(item)
    # as the sandbox EHR holds it (refloop demo): the requester with a text name only
    held[("Practitioner", item["requester"]["npi"])] = {
        "resourceType": "Practitioner", "id": item["requester"]["npi"],
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi",
                        "value": item["requester"]["npi"]}],
        "name": [{"text": item["requester"]["name"]}]}
    built, _ = build(held, item["key"])
    assert errors(built) == []
    assert entry(built, "Practitioner")["name"][0]["family"]


def service_request_examples() -> list[tuple[str, dict[str, Any], Held]]:
    """Every ServiceRequest in the example bundles under fixtures/ (HL7 v2 conversions and
    PAS request bundles), with the resources its bundle holds."""
    found = []
    for path in sorted([*FIXTURES.glob("hl7v2/*-expected.json"),
                        *FIXTURES.glob("pas/v*/Bundle-*Authorization*Bundle*.json")]):
        bundle = json.loads(path.read_text("utf-8"))
        held = {(e["resource"]["resourceType"], e["resource"].get("id", "")): e["resource"]
                for e in bundle.get("entry", [])}
        for (kind, rid), resource in held.items():
            if kind == "ServiceRequest":
                found.append((f"{path.parent.name}/{path.name}#{rid[:8]}", resource, held))
    return found


EXAMPLES = service_request_examples()


@pytest.mark.parametrize(("name", "request_", "held"), EXAMPLES,
                         ids=[name for name, _, _ in EXAMPLES])
def test_every_service_request_example_builds_without_a_check_error(
        name: str, request_: dict[str, Any], held: Held) -> None:
    """The examples' orders carry no Coverage: each gets the same member's Coverage; PAS
    request bundles keep their own Coverage, Patient and performers."""
    held = copy.deepcopy(held)
    request = held[("ServiceRequest", request_["id"])]
    if not request.get("insurance"):
        held[("Coverage", "test-coverage")] = {
            "resourceType": "Coverage", "id": "test-coverage", "status": "active",
            "subscriberId": "M100", "beneficiary": request["subject"],
            "payor": [{"display": "Blue Horizon"}]}
        request["insurance"] = [{"reference": "Coverage/test-coverage"}]
    for reference in (request["subject"]["reference"],):
        kind, rid = reference.split("/")[-2:]
        assert (kind, rid) in held, f"{name}: its bundle lacks {reference}"
    built, _ = build(held, request["id"])
    assert errors(built) == [], name


def test_the_examples_include_dated_orders_and_performers() -> None:
    """What the examples exercise (so the test above covers the converted cases)."""
    orders = [r for _, r, _ in EXAMPLES]
    assert sum("occurrenceDateTime" in r for r in orders) >= 3
    assert sum("occurrencePeriod" in r for r in orders) >= 3
    assert sum("occurrenceTiming" in r for r in orders) >= 3
    assert sum(bool(r.get("performer")) for r in orders) >= 5
