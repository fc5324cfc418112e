"""Flavour choice (the decision table) on the official capability examples, configuration
parsing, mapping a ServiceRequest, version ordering, notification dedupe keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from referrals.model import Referral
from subscriptions.config import ConfigError, parse_fhir_servers, parse_subscriptions_config
from subscriptions.discovery import (
    ServerFacts,
    Topic,
    choose_flavour,
    from_basic,
    from_capability,
)
from subscriptions.endpoint import dedupe_key
from subscriptions.intake import _newer
from subscriptions.mapping import changed_fields, matches_criteria, to_referral_fields
from subscriptions.notification import parse_notification
from subscriptions.registration import backport_filters

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "subscriptions"
CAPS = FIXTURES / "backport-1.1.0" / "capability"
SR_BOTH = Topic("http://t/sr-both", frozenset({"ServiceRequest"}),
                frozenset({"create", "update"}), frozenset({"patient"}))
SR_CREATE = Topic("http://t/sr-new", frozenset({"ServiceRequest"}), frozenset({"create"}))


def cap(name: str) -> dict[str, Any]:
    return json.loads((CAPS / name).read_text())


def test_backport_server_statement_is_detected() -> None:
    facts = from_capability(cap("CapabilityStatement-r4-capabilitystatement-example-server.json"))
    assert (facts.fhir_version, facts.subscription_create, facts.backport) == \
        ("4.0.1", True, True)
    assert [t.url for t in facts.topics] == ["http://example.org/topics/patient-admission",
                                             "http://example.org/topics/patient-discharge"]
    # topics advertised only by URL, none known to cover ServiceRequest: classic criteria
    choice = choose_flavour(facts)
    assert choice.flavour == "r4-classic"


def test_backport_topic_covering_create_and_update_wins() -> None:
    facts = from_capability(cap("CapabilityStatement-backport-subscription-server-r4.json"))
    facts = ServerFacts(facts.fhir_version, True, True, (SR_CREATE, SR_BOTH))
    choice = choose_flavour(facts)
    assert (choice.flavour, choice.topic) == ("r4-backport", SR_BOTH)
    assert "create and update" in choice.why


def test_create_only_topic_prefers_classic_and_says_why() -> None:
    choice = choose_flavour(ServerFacts("4.0.1", True, True, (SR_CREATE,)))
    assert choice.flavour == "r4-classic" and "miss revocations" in choice.why
    only = choose_flavour(ServerFacts("4.0.1", False, True, (SR_CREATE,)))
    assert (only.flavour, only.topic) == ("r4-backport", SR_CREATE)


def test_no_subscription_means_polling_and_overrides_win() -> None:
    bare = ServerFacts("4.0.1", False, False)
    assert choose_flavour(bare).flavour == "polling"
    assert choose_flavour(ServerFacts("5.0.0", True, False)).flavour == "polling"  # no topic
    assert choose_flavour(ServerFacts("5.0.0", False, False, (SR_BOTH,))).flavour == "polling"
    assert choose_flavour(ServerFacts("4.0.1", True, False), "r5-topic").flavour == "polling"
    assert choose_flavour(ServerFacts("4.0.1", True, True, (SR_BOTH,)), "r4-classic").flavour \
        == "r4-classic"
    assert choose_flavour(ServerFacts("4.0.1", True, False), "polling").flavour == "polling"
    pinned = choose_flavour(ServerFacts("4.0.1", True, True), "r4-backport", "http://t/x")
    assert (pinned.flavour, pinned.topic and pinned.topic.url) == ("r4-backport", "http://t/x")
    assert choose_flavour(bare, "r4-backport").flavour == "polling"


def test_r5_server_gets_a_native_topic_subscription_on_its_best_topic() -> None:
    narrow = Topic("http://t/narrow", frozenset({"ServiceRequest"}),
                   frozenset({"create", "update"}), frozenset({"patient"}))
    wide = Topic("http://t/wide", frozenset({"ServiceRequest"}),
                 frozenset({"create", "update"}), frozenset({"category", "intent"}))
    choice = choose_flavour(ServerFacts("5.0.0", True, False, (narrow, wide)),
                            filters=["intent", "category"])
    assert (choice.flavour, choice.topic) == ("r5-topic", wide)
    assert "R5" in choice.why and "http://t/wide" in choice.why
    created = choose_flavour(ServerFacts("5.0.0", True, False, (SR_CREATE,)))
    assert created.flavour == "r5-topic" and "updates are found by polling" in created.why


def test_basic_wrapped_topic_is_read() -> None:
    basic = json.loads((FIXTURES / "backport-1.2.0-ballot" / "Basic-r4-encounter-complete.json")
                       .read_text())
    topic = from_basic(basic)
    assert topic is not None
    assert topic.url == "http://hl7.org/fhir/uv/subscriptions-backport/SubscriptionTopic/" \
        "r4-encounter-complete"
    assert topic.resources == frozenset({"Encounter"})
    assert topic.interactions == frozenset({"create", "update"})
    assert topic.filters == frozenset({"subject", "_in"})


def test_backport_filters_keep_what_the_topic_allows() -> None:
    server = parse_fhir_servers([{"base_url": "http://ehr/fhir",
                                  "criteria": "ServiceRequest?intent=order&patient=Patient/1"}])[0]
    kept, dropped = backport_filters(server, SR_BOTH)
    # the topic filters by patient only: intent and the referral category are checked by Refloop
    assert kept == ["ServiceRequest?patient=Patient/1"] and dropped == ["intent", "category"]


def test_configuration_is_checked_with_helpful_messages(tmp_path: Path) -> None:
    servers = parse_fhir_servers([{"base_url": "https://ehr/fhir/", "poll_interval": "60"}])
    assert servers[0].base == "https://ehr/fhir" and servers[0].poll_interval == 60.0
    assert servers[0].criteria_params == [("intent", "order"),
                                          ("category", "http://snomed.info/sct|3457005")]
    every = parse_fhir_servers([{"base_url": "https://ehr/fhir", "categories": []}])[0]
    assert every.criteria == "ServiceRequest?intent=order"
    local = parse_fhir_servers([{"base_url": "https://ehr/fhir",
                                 "categories": ["http://snomed.info/sct|3457005", "urn:x|REF"]}])
    assert local[0].criteria == \
        "ServiceRequest?intent=order&category=http://snomed.info/sct|3457005,urn:x|REF"
    mine = parse_fhir_servers([{"base_url": "https://ehr/fhir",
                                "criteria": "ServiceRequest?category=urn:x|REF"}])[0]
    assert mine.criteria == "ServiceRequest?category=urn:x|REF"  # its own category wins
    for bad, words in [({"base_url": "ftp://x"}, "http"), ({}, "base_url is required"),
                       ({"base_url": "http://x", "categories": 3}, "categories must be"),
                       ({"base_url": "http://x", "auth": "backend-services"}, "client_id"),
                       ({"base_url": "http://x", "colour": "red"}, "unknown keys"),
                       ({"base_url": "http://x", "alg": "HS256"}, "RS384 or ES384"),
                       ({"base_url": "http://x", "auth": "backend-services", "client_id": "a",
                         "key_file": str(tmp_path / "missing.pem")}, "does not exist")]:
        with pytest.raises(ConfigError, match=words):
            parse_fhir_servers([bad])
    assert parse_subscriptions_config({"max_body_bytes": "2048"}).max_body_bytes == 2048
    with pytest.raises(ConfigError, match="unknown key"):
        parse_subscriptions_config({"nope": 1})


SR = {"resourceType": "ServiceRequest", "id": "1", "status": "active", "intent": "order",
      "priority": "stat", "subject": {"reference": "http://ehr/fhir/Patient/p1"},
      "requester": {"reference": "Practitioner/d1"},
      "performer": [{"reference": "PractitionerRole/r1"}],
      "performerType": {"coding": [{"display": "Neurology"}]},
      "code": {"text": "Neurology referral"}, "note": [{"text": "Headaches"}],
      "insurance": [{"reference": "Coverage/c1"}]}


def test_service_request_maps_to_referral_fields() -> None:
    included = {"Coverage/c1": {"resourceType": "Coverage", "id": "c1",
                                "payor": [{"reference": "Organization/o1"}]},
                "Organization/o1": {"resourceType": "Organization", "id": "o1",
                                    "name": "Blue Plan"}}
    fields = to_referral_fields(SR, included)
    assert fields == {"patient": "Patient/p1", "requester": "Practitioner/d1",
                      "performer": "PractitionerRole/r1", "priority": "stat",
                      "specialty": "Neurology", "reason_text": "Neurology referral: Headaches",
                      "payer": "Blue Plan"}
    odd = to_referral_fields({**SR, "priority": "whenever"}, {})
    assert odd["priority"] == "routine" and odd["payer"] == ""
    referral = Referral(id="r", source_key="k", service_request="ServiceRequest/1",
                        patient="Patient/p1", priority="routine")
    assert changed_fields(referral, {"priority": "stat", "patient": "Patient/p1",
                                     "payer": ""}) == {"priority": "stat"}


def test_criteria_checked_locally() -> None:
    assert not matches_criteria(SR, [("intent", "order"), ("category", "x")])  # no category
    referral = {**SR, "category": [{"coding": [{"system": "http://snomed.info/sct",
                                                "code": "3457005"}]}]}
    lab = {**SR, "category": [{"coding": [{"system": "http://snomed.info/sct",
                                           "code": "108252007"}]}]}
    wanted = [("intent", "order"), ("category", "http://snomed.info/sct|3457005,urn:x|REF")]
    assert matches_criteria(referral, wanted) and not matches_criteria(lab, wanted)
    assert matches_criteria(referral, [("category", "3457005")])  # code alone: any system
    assert not matches_criteria(referral, [("category", "|3457005")])  # "|code": no system
    assert matches_criteria(lab, [("category", "http://snomed.info/sct|")])
    assert matches_criteria(lab, [("category", "")])  # no categories: any
    assert not matches_criteria({**SR, "intent": "plan"}, [("intent", "order")])
    assert matches_criteria(SR, [("status", "draft,active")])


@pytest.mark.parametrize("version,updated,last,expected", [
    ("3", "", ("2", ""), True), ("2", "", ("2", ""), False), ("10", "", ("9", ""), True),
    ("1", "", ("2", ""), False), ("a", "2026-01-02", ("b", "2026-01-01"), True),
    ("a", "2026-01-01", ("b", "2026-01-02"), False), ("1", "", ("deleted", ""), True),
])
def test_version_ordering(version: str, updated: str, last: tuple[str, str],
                          expected: bool) -> None:
    assert _newer(version, updated, last) is expected


def test_dedupe_keys() -> None:
    sr = {"resourceType": "ServiceRequest", "id": "5", "meta": {"versionId": "2"}}
    put = parse_notification("PUT", "ServiceRequest/5", sr)
    post = parse_notification("POST", "", sr)
    assert dedupe_key("h", put, b"x") == dedupe_key("h", post, b"y")  # same version
    newer = parse_notification("PUT", "ServiceRequest/5", {**sr, "meta": {"versionId": "3"}})
    assert dedupe_key("h", newer, b"x") != dedupe_key("h", put, b"x")
    assert dedupe_key("other", put, b"x") != dedupe_key("h", put, b"x")
    assert dedupe_key("h", parse_notification("POST", "", None), b"") is None
    unversioned = {"resourceType": "ServiceRequest", "id": "5"}
    a = parse_notification("PUT", "ServiceRequest/5", unversioned)
    assert dedupe_key("h", a, b"one") != dedupe_key("h", a, b"two")


def test_subscription_resources() -> None:
    from subscriptions.registration import build_backport_subscription, build_classic_subscription
    from subscriptions.registry import Hook

    hook = Hook("abc", "https://refloop.example/hooks/abc", "s3cret", "https://ehr/fhir",
                "referrals", "subscriptions.referral")
    classic = build_classic_subscription(hook, "ServiceRequest?intent=order")
    assert classic["status"] == "requested" and classic["criteria"] == "ServiceRequest?intent=order"
    assert classic["channel"]["endpoint"] == hook.url
    assert classic["channel"]["header"] == ["Authorization: Bearer s3cret"]
    assert classic["channel"]["payload"] == "application/fhir+json"
    backport = build_backport_subscription(hook, SR_BOTH, ["ServiceRequest?patient=Patient/1"])
    assert backport["meta"]["profile"] == [
        "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"]
    assert backport["criteria"] == SR_BOTH.url
    assert backport["_criteria"]["extension"][0]["valueString"] == \
        "ServiceRequest?patient=Patient/1"
    assert backport["channel"]["_payload"]["extension"][0]["valueCode"] == "id-only"
