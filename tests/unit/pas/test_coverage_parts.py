"""The pure parts of "which referrals need authorization" and eligibility: the coverage table,
the order of the sources, the CDS Hooks request (prefetch from what we hold) and the CRD answer
(systemActions and card suggestions), the eligibility answer in its shapes, the configuration."""

from __future__ import annotations

from typing import Any

import pytest

from pas_client.config import ConfigError, CoverageRule, PayerConfig, payer_from_table
from pas_client.config import Organization as Org
from pas_client.crd import CrdError, Service, build_hook_request, choose_service, read_answer
from pas_client.eligibility import find_responses, read_response, summary
from pas_client.requirements import (
    OrderFacts,
    Requirement,
    decide,
    from_crd,
    from_eligibility,
    from_rules,
)

CRD_EXT = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
FACTS = OrderFacts(frozenset({"306235009", "99245"}), "cardiology", "11",
                   frozenset({"GOLD"}))


def payer(*rules: CoverageRule, default: str = "unknown") -> PayerConfig:
    return PayerConfig(name="Blue Horizon", base_url="http://x", coverage_rules=rules,
                       default_authorization=default)


@pytest.mark.parametrize(("rule", "matched"), [
    (CoverageRule("required", services=("99245",)), True),
    (CoverageRule("required", services=("99244",)), False),
    (CoverageRule("required", specialties=("Cardiology",)), True),       # case-insensitive
    (CoverageRule("required", specialties=("cardiology",), plans=("SILVER",)), False),
    (CoverageRule("required", places_of_service=("11",), plans=("GOLD",)), True),
    (CoverageRule("required"), True),                                   # every order
])
def test_a_rule_matches_when_every_criterion_given_does(rule: CoverageRule,
                                                        matched: bool) -> None:
    found = from_rules(payer(rule), FACTS)
    assert (found.status == "required") is matched
    assert ("coverage rule 1" in found.source) is matched


def info(pa_needed: str, covered: str = "covered") -> dict[str, Any]:
    parts = [{"url": "covered", "valueCode": covered},
             {"url": "coverage-assertion-id", "valueString": "A-1"}]
    if pa_needed:
        parts.append({"url": "pa-needed", "valueCode": pa_needed})
    return {"url": CRD_EXT, "extension": parts}


@pytest.mark.parametrize(("needed", "status"), [
    ("auth-needed", "required"), ("performpa", "required"), ("no-auth", "not-required"),
    ("satisfied", "not-required"), ("conditional", "unknown"), ("indeterminate", "unknown")])
def test_crd_pa_needed(needed: str, status: str) -> None:
    found = from_crd(payer(), [info(needed)])
    assert found is not None and found.status == status
    assert "assertion A-1" in found.source


def test_not_covered_is_not_a_decision_about_authorization() -> None:
    found = from_crd(payer(), [info("", covered="not-covered")])
    assert found is not None and found.status == "unknown"


def test_the_payers_definite_answer_comes_first_then_the_table() -> None:
    table = Requirement("not-required", "table")
    crd_unknown = Requirement("unknown", "crd conditional")
    crd = Requirement("required", "crd")
    eligibility = from_eligibility(payer(), {"auth_required": False})
    assert decide(crd, eligibility, table).source == "crd"
    assert eligibility is not None and decide(crd_unknown, eligibility, table) == eligibility
    assert decide(crd_unknown, None, table) == table
    undecided = decide(crd_unknown, None, Requirement("unknown", "default"))
    assert undecided.status == "unknown" and "crd conditional" in undecided.source


def test_the_hook_request_carries_context_and_the_prefetch_we_can_satisfy() -> None:
    service = Service("sign", "order-sign", {
        "patient": "Patient/{{context.patientId}}",
        "coverage": "Coverage?patient={{context.patientId}}&status=active",
        "practitioner": "Practitioner/{{userPractitionerId}}",
        "encounter": "Encounter/{{context.encounterId}}",
        "chain": "Practitioner?_id={{context.draftOrders.ServiceRequest.requester}}"})
    patient = {"resourceType": "Patient", "id": "p1"}
    coverage = {"resourceType": "Coverage", "id": "c1"}
    doctor = {"resourceType": "Practitioner", "id": "d1"}
    order = {"resourceType": "ServiceRequest", "id": "sr1"}
    call = build_hook_request(service, user="Practitioner/d1", patient=patient, order=order,
                              held={"Practitioner/d1": doctor, "Patient/p1": patient},
                              coverage=coverage)
    assert call["hook"] == "order-sign" and call["hookInstance"]
    assert call["context"]["userId"] == "Practitioner/d1"
    assert call["context"]["draftOrders"]["entry"][0]["resource"] == order
    prefetch = call["prefetch"]
    assert prefetch["patient"] == patient and prefetch["practitioner"] == doctor
    assert prefetch["coverage"]["entry"] == [{"resource": coverage}]
    assert "encounter" not in prefetch          # not held: left out, as CDS Hooks says


def test_the_crd_answer_is_read_from_system_actions_and_suggestions() -> None:
    order = {"resourceType": "ServiceRequest", "id": "sr1", "extension": [info("no-auth")]}
    answer = read_answer({"cards": [{"summary": "No PA", "indicator": "info",
                                     "source": {"label": "Payer"}, "suggestions": [
                                         {"label": "x", "actions": [{"type": "update",
                                                                     "resource": order}]}]}],
                          "systemActions": [{"type": "update", "resource": order}]})
    assert len(answer.coverage_information) == 2
    assert answer.cards == [{"summary": "No PA", "indicator": "info", "source": "Payer"}]
    with pytest.raises(CrdError):
        read_answer({"systemActions": []})
    with pytest.raises(CrdError, match="no CDS service for the order-sign hook"):
        choose_service({"services": [{"hook": "order-select", "id": "x"}]}, "order-sign")


def eligibility(inforce: Any = True, network: str = "in", required: Any = True
                ) -> dict[str, Any]:
    item: dict[str, Any] = {"network": {"coding": [{"code": network}]}, "name": "Gold PPO"}
    if required is not None:
        item["authorizationRequired"] = required
    insurance: dict[str, Any] = {"coverage": {"reference": "Coverage/c1"}, "item": [item]}
    if inforce is not None:
        insurance["inforce"] = inforce
    return {"resourceType": "CoverageEligibilityResponse", "outcome": "complete",
            "insurance": [insurance]}


def test_the_eligibility_answer_in_every_shape() -> None:
    bare = eligibility()
    for reply in (bare, {"resourceType": "Bundle", "entry": [{"resource": bare}]},
                  {"resourceType": "Parameters", "parameter": [{"resource": bare}]}):
        [found] = find_responses(reply)
        answer = read_response(found, reply)
        assert (answer["active"], answer["in_network"], answer["auth_required"],
                answer["plan"]) == (True, True, True, "Gold PPO")
    unknown = read_response(eligibility(inforce=None, network="?", required=None), {})
    assert (unknown["active"], unknown["in_network"], unknown["auth_required"]) == \
        (None, None, None)
    assert summary(unknown) == ("coverage unknown, plan Gold PPO, unknown, authorization "
                                "unknown")
    assert find_responses({"resourceType": "OperationOutcome"}) == []


@pytest.mark.parametrize(("table", "message"), [
    ({"default_authorization": "maybe"}, "default_authorization 'maybe'"),
    ({"coverage_rules": [{"services": ["1"]}]}, "coverage rule 1 needs authorization"),
    ({"coverage_rules": [{"authorization": "required", "service": ["1"]}]},
     "unknown keys ['service']"),
    ({"coverage_rules": {"authorization": "required"}}, "array of tables"),
])
def test_the_configuration_says_what_is_wrong(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        payer_from_table({"name": "P", "base_url": "http://x", **table}, Org())


def test_the_configuration_reads_the_table_and_the_services() -> None:
    found = payer_from_table({"name": "P", "base_url": "http://x", "eligibility": True,
                              "crd_url": "http://x/cds-services/", "auto_submit": True,
                              "coverage_rules": [{"services": "99245",
                                                  "authorization": "required"}]}, Org())
    assert found.coverage_rules == (CoverageRule("required", services=("99245",)),)
    assert found.eligibility and found.auto_submit
    assert found.crd_url == "http://x/cds-services" and found.crd_hook == "order-sign"
