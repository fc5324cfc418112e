"""IN1/IN2 to Coverage (payer Organization, member id, subscriber and relationship), linked
from the referral's ServiceRequest and usable by prior authorization; on SQLite and
PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from hl7_bridge.tables import patient_ids
from pas_client.config import Organization, PasConfig, PayerConfig
from referrals.model import Referral
from referrals.store.schema import referrals
from refloop.wiring.pas import make_flow

from .conftest import Feed, fixture

SENDER = "DEMOEHR^NORTHCLINIC"
SERVER = f"hl7:{SENDER}"


def segment(name: str, fields: dict[int, str]) -> str:
    return "|".join([name, *(fields.get(n, "") for n in range(1, max(fields) + 1))]) + "\r"


#: a second insurance whose subscriber is the patient's spouse (IN2-2: the spouse's SSN)
SPOUSE_IN1 = segment("IN1", {1: "2", 2: "SILVER^Silver HMO^L", 3: "ACMEINS^^^ACME^NIIP",
                            4: "Acme Insurance", 16: "Novak^Piotr", 17: "SPO^Spouse^HL70063",
                            18: "19650310", 19: "88 Birch Ave^^Springfield^IL^62704^USA",
                            49: "ACM-555"}) + \
    segment("IN2", {2: "123-45-6780", 61: "ACM-555-02"})


def send_referral(feed: Feed, extra: str = "") -> Referral:
    raw = fixture("../demo/v2_referral.hl7").decode()
    if extra:
        raw = raw.replace("DG1|", extra + "DG1|", 1)
    ack = feed.send(raw.encode())
    assert ack is not None and b"MSA|AA|" in ack, ack
    feed.drain()
    (found,) = feed.services.store.list(where=[referrals.c.source_key.like("hl7|%")])
    return found


def resource(feed: Feed, reference: str) -> dict[str, Any]:
    rtype, rid = reference.split("/")
    body = feed.services.resources.try_get(rtype, rid, server=SERVER)
    assert body is not None, reference
    return body


def test_in1_becomes_a_coverage_with_its_payer_member_and_subscriber(feed: Feed) -> None:
    referral = send_referral(feed)
    assert referral.payer == "Demo Health Plan"
    request = resource(feed, referral.service_request)
    (link,) = request["insurance"]
    coverage = resource(feed, link["reference"])
    assert coverage["status"] == "active"
    assert coverage["beneficiary"] == {"reference": referral.patient}
    assert coverage["subscriber"] == {"reference": referral.patient}  # IN1-17 SEL
    assert coverage["subscriberId"] == "DHP-77001234"  # IN1-49
    assert coverage["relationship"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship",
        "code": "self"}
    assert {"value": "GOLD-PPO"} in coverage["identifier"]  # IN1-2
    assert coverage["period"] == {"start": "2024-01-01", "end": "2024-12-31"}
    assert coverage["class"][0]["value"] == "GRP-4410"
    (payor,) = coverage["payor"]
    assert payor["display"] == "Demo Health Plan"
    assert payor["identifier"]["value"] == "DEMOPAYER"
    payer = resource(feed, payor["reference"])
    assert payer["name"] == "Demo Health Plan"
    assert payer["identifier"][0] == {
        "system": "urn:oid:2.16.840.1.113883.3.9999.20", "value": "DEMOPAYER",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                             "code": "NIIP"}]}}
    assert payer["address"][0]["city"] == "Chicago"


def test_a_dependant_is_covered_through_a_related_person(feed: Feed) -> None:
    referral = send_referral(feed, SPOUSE_IN1)
    request = resource(feed, referral.service_request)
    first, second = (resource(feed, i["reference"]) for i in request["insurance"])
    assert first["subscriberId"] == "DHP-77001234"
    assert second["subscriberId"] == "ACM-555"
    assert second["relationship"]["coding"][0]["code"] == "spouse"
    assert second["beneficiary"] == {"reference": referral.patient}
    spouse = resource(feed, second["subscriber"]["reference"])
    assert spouse["resourceType"] == "RelatedPerson"
    assert spouse["patient"] == {"reference": referral.patient}
    assert spouse["name"] == [{"family": "Novak", "given": ["Piotr"]}]
    assert spouse["birthDate"] == "1965-03-10"
    assert spouse["identifier"][0]["system"] == "http://hl7.org/fhir/sid/us-ssn"
    assert spouse["identifier"][0]["value"] == "123-45-6780"  # IN2-2
    member = [i["value"] for i in second["identifier"]
              if i.get("type", {}).get("coding", [{}])[0].get("code") == "MB"]
    assert member == ["ACM-555", "ACM-555-02"]  # IN1-49, IN2-61


def test_prior_authorization_finds_the_v2_coverage(feed: Feed) -> None:
    """The PAS request of a v2 referral is built from the sender's resources: Coverage with
    member id and payer, and it passes the pre-flight check (no error finding)."""
    referral = send_referral(feed)
    payer = PayerConfig(name="Demo Health Plan", base_url="http://127.0.0.1:9/fhir",
                        payer_id="DEMO-PAYER")
    flow = make_flow(feed.services, PasConfig(
        organization=Organization("Refloop Test Clinic", "1234567893", "123456789"),
        payers=(payer,)))
    request, sendable = flow.prepare(referral, payer)
    errors = [f for f in request.findings if f["severity"] == "error"]
    assert sendable and errors == [], errors
    coverage = next(e["resource"] for e in request.bundle_json()["entry"]
                    if e["resource"]["resourceType"] == "Coverage")
    assert coverage["subscriberId"] == "DHP-77001234"
    assert coverage["relationship"]["coding"][0]["code"] == "self"


def send_family(feed: Feed, mrns: tuple[str, str], first: int = 0) -> list[Referral]:
    """The demo referral for two patients (PID-3 `mrns`, empty: none) on one member id."""
    raw = fixture("../demo/v2_referral.hl7").decode()
    for n, (mrn, name) in enumerate(zip(mrns, ("Novak^Elena", "Novak^Tom"), strict=True),
                                    start=first):
        ack = feed.send(raw.replace("DEMOV2-0001", f"FAM-{n}").replace("DEMO-V2-0001", f"FP-{n}")
                        .replace("V2-5521^^^NORTHCLINIC^MR", mrn)
                        .replace("Novak^Elena^^^Ms^^L", name).encode())
        assert ack is not None and b"MSA|AA|" in ack, ack
    feed.drain()
    return feed.services.store.list(where=[referrals.c.source_key.like("hl7|%")])


def assert_own_coverages(feed: Feed, made: list[Referral]) -> None:
    assert len({r.patient for r in made}) == 2
    for referral in made:
        (link,) = resource(feed, referral.service_request)["insurance"]
        assert resource(feed, link["reference"])["beneficiary"] == {"reference": referral.patient}


def test_patients_without_identifiers_on_one_policy_get_a_coverage_each(feed: Feed) -> None:
    """Two patients sent without PID-3 (found by name and birth date alone) on one member id:
    each referral's Coverage is for its own patient, not the one sent last."""
    assert_own_coverages(feed, send_family(feed, ("", "")))


def test_patients_from_before_time_ordered_ids_on_one_policy_get_a_coverage_each(
        feed: Feed) -> None:
    """Two patients indexed under ids from before time-ordered ids (name-based UUIDs), on one
    member id: each referral's Coverage is for its own patient, not the one sent last."""
    mrns = ("FAM-A^^^NORTHCLINIC^MR", "FAM-B^^^NORTHCLINIC^MR")
    send_family(feed, mrns)  # indexes both patients; then their ids become old ones
    with feed.services.db.write() as conn:
        for row in conn.execute(sa.select(patient_ids)).mappings().all():
            conn.execute(patient_ids.update().where(
                patient_ids.c.system == row["system"], patient_ids.c.value == row["value"])
                .values(patient_id=str(uuid.uuid5(uuid.NAMESPACE_URL, row["value"]))))
    made = [r for r in send_family(feed, mrns, first=2)
            if uuid.UUID(r.patient.removeprefix("Patient/")).version == 5]
    assert_own_coverages(feed, made)


def test_an_in1_sent_twice_is_named_once(feed: Feed) -> None:
    """The same insurance repeated (same payer and member id) is one Coverage, named once by
    the ServiceRequest: prior authorization took it for two and refused to choose."""
    raw = fixture("../demo/v2_referral.hl7").decode()
    in1 = next(line for line in raw.split("\r") if line.startswith("IN1|"))
    referral = send_referral(feed, in1.replace("IN1|1|", "IN1|2|", 1) + "\r")
    links = resource(feed, referral.service_request)["insurance"]
    assert len(links) == 1, links
