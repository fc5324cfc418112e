"""Updates apply field by field with v2 semantics (an empty field changes nothing, `""`
deletes) for REF, ADT, SIU and ORM/OMG, on SQLite and PostgreSQL; each parsed and mapped in
the worker, and in the mapping process (hl7_bridge/mapper.py: the writer then parses a
message only to merge it with a stored state)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from hl7_bridge.config import Hl7Config
from hl7_bridge.ids import recent_id
from hl7_bridge.mapper import MappingProcess
from referrals.model import Referral
from referrals.store.schema import referrals, resources
from refloop.services import Services

from .conftest import Feed, fixture

REF_SENDER = "hl7:EHRX^CLINIC"
PID_3 = "A100234^^^CLINIC&2.16.840.1.113883.3.9999.11&ISO^MR"
MSH = "MSH|^~\\&|{app}|{facility}|REFHUB|HUB|20240516093000-0500||{type}|{control}|P|2.5.1\r"


@pytest.fixture(scope="module")
def mapping_process() -> Iterator[MappingProcess]:
    process = MappingProcess(Hl7Config(), min_batch=1)
    process.start()
    yield process
    process.stop()


@pytest.fixture(params=["worker", "mapping-process"])
def feed(request: pytest.FixtureRequest, services: Services,
         mapping_process: MappingProcess) -> Iterator[Feed]:
    feed = Feed(services)
    there = request.param == "mapping-process"
    feed.adapter.applier.mapper = mapping_process if there else None
    before = mapping_process.mapped
    yield feed
    feed.adapter.applier.mapper = None  # the module's process outlives these services
    assert (mapping_process.mapped > before) == there  # the messages went where they should


def segment(name: str, fields: dict[int, str]) -> str:
    return "|".join([name, *(fields.get(n, "") for n in range(1, max(fields) + 1))]) + "\r"


def ref_i12() -> bytes:
    """The 21-segment REF^I12, plus PID-19 SSN and PID-14 work phone already in it."""
    raw = fixture("authored__bench_REF_I12_v251_21seg.hl7").decode()
    pid = next(line for line in raw.split("\r") if line.startswith("PID|"))
    fields = pid.split("|")
    fields += [""] * (20 - len(fields))
    fields[19] = "123-45-6789"
    return raw.replace(pid, "|".join(fields)).encode()


def ref_i13(control: str, rf1: dict[int, str], *more: str) -> bytes:
    msh = MSH.format(app="EHRX", facility="CLINIC^2.16.840.1.113883.3.9999.10^ISO",
                     type="REF^I13^REF_I12", control=control)
    return (msh + segment("RF1", {6: "R-88812^CLINIC", **rf1})
            + segment("PID", {1: "1", 3: PID_3}) + "".join(more)).encode()


def send(feed: Feed, raw: bytes) -> None:
    ack = feed.send(raw)
    assert ack is not None and (b"MSA|AA|" in ack or b"MSA|CA|" in ack), ack
    feed.drain()


def body(feed: Feed, reference: str, server: str = REF_SENDER) -> dict[str, Any]:
    rtype, rid = reference.split("/")
    found = feed.services.resources.try_get(rtype, rid, server=server)
    assert found is not None, reference
    return found


def the_referral(feed: Feed) -> Referral:
    (found,) = feed.services.store.list(where=[referrals.c.source_key.like("hl7|%")])
    return found


def values(resource: dict[str, Any], field: str, key: str = "value") -> list[Any]:
    return [item.get(key) for item in resource.get(field, [])]


def test_an_i13_that_changes_only_the_priority_erases_nothing(feed: Feed) -> None:
    send(feed, ref_i12())
    before = the_referral(feed)
    request_before = body(feed, before.service_request)
    patient_before = body(feed, before.patient)
    assert before.requester and before.performer and before.priority == "routine"

    send(feed, ref_i13("UPD1", {1: "P", 2: "A^ASAP^HL70280"}))
    after = the_referral(feed)
    assert after.priority == "asap"
    assert (after.requester, after.performer, after.reason_text, after.payer) == \
        (before.requester, before.performer, before.reason_text, before.payer)
    request = body(feed, after.service_request)
    assert request["priority"] == "asap"
    for kept in ("requester", "performer", "reasonCode", "note", "insurance", "code",
                 "occurrencePeriod", "identifier"):
        assert request[kept] == request_before[kept], kept
    patient = body(feed, after.patient)
    assert patient == patient_before  # SSN, phone, email, address, name: all kept
    assert "123-45-6789" in values(patient, "identifier")
    assert {"+1 734 5551234", "adam@example.com", "+1 734 5559876"} <= \
        set(values(patient, "telecom"))
    assert patient["address"][0]["city"] == "Ann Arbor"


def test_after_a_restart_an_update_finds_the_patient_and_request_by_their_keys(
        feed: Feed) -> None:
    """A new patient's and ServiceRequest's ids are time-ordered (version 7 UUIDs), not derived
    from their keys: a worker that did not map the I12 (its recent ids emptied, as after a
    restart) finds both through the patient index and the referral's key, so the update
    lands on the same resources and v2 state and creates nothing."""
    send(feed, ref_i12())
    before = the_referral(feed)
    for reference in (before.patient, before.service_request):
        assert uuid.UUID(reference.split("/")[1]).version == 7, reference
    request_before = body(feed, before.service_request)
    recent_id.ids.clear()

    send(feed, ref_i13("UPD9", {1: "P", 2: "A^ASAP^HL70280"}))
    after = the_referral(feed)
    assert (after.patient, after.service_request) == (before.patient, before.service_request)
    assert after.priority == "asap" and after.requester == before.requester
    assert body(feed, after.service_request)["reasonCode"] == request_before["reasonCode"]
    with feed.services.db.read() as conn:
        kinds = dict(conn.execute(sa.select(resources.c.resource_type, sa.func.count())
                                  .group_by(resources.c.resource_type)).all())
    assert (kinds["Patient"], kinds["ServiceRequest"], kinds["Coverage"]) == (1, 1, 1)
    (link,) = body(feed, after.service_request)["insurance"]
    coverage = link["reference"].removeprefix("Coverage/")
    patient = after.patient.removeprefix("Patient/")
    assert uuid.UUID(coverage).version == 8 and coverage[:13] == patient[:13]  # beside it


def test_a_coverage_without_a_member_id_is_one_per_patient(feed: Feed) -> None:
    """IN1 without IN1-36 or IN1-49: the Coverage is keyed by plan and is the patient's own,
    under the patient's id as stored, so a later message mapped without the first one's recent
    ids updates it instead of adding another; another patient on the plan gets their own."""
    in1 = segment("IN1", {1: "1", 2: "GOLD-PPO", 3: "NIIP-1^^^&2.16.840.1.113883.3.9999.20&ISO"
                                                    "^NIIP", 4: "Northern Insurance"})
    send(feed, (ADT.format(event="A04", control="NOMEM1") + segment("PID", {
        1: "1", 3: "ADT-1^^^HOSP^MR", 5: "Doe^Jane"}) + in1).encode())
    recent_id.ids.clear()
    send(feed, (ADT.format(event="A08", control="NOMEM2") + segment("PID", {
        1: "1", 3: "ADT-1^^^HOSP^MR"}) + in1.replace("Northern", "North")).encode())
    send(feed, (ADT.format(event="A04", control="NOMEM3") + segment("PID", {
        1: "1", 3: "ADT-2^^^HOSP^MR", 5: "Roe^Rita"}) + in1).encode())
    with feed.services.db.read() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(resources.c.body).where(
            resources.c.resource_type == "Coverage")).scalars()]
    owners = sorted(str(r["beneficiary"]["reference"]) for r in rows)
    assert len(owners) == 2 and owners[0] != owners[1], owners


def test_a_double_quote_null_deletes_the_field(feed: Feed) -> None:
    send(feed, ref_i12())
    send(feed, ref_i13("UPD2", {2: "R"}, "DG1|1||\"\"\r")
         .replace(f"|{PID_3}\r".encode(), f"|{PID_3}||||||||||\"\"\r".encode()))
    referral = the_referral(feed)
    patient = body(feed, referral.patient)
    assert values(patient, "telecom") == ["+1 734 5559876"]  # PID-13 deleted, PID-14 kept
    request = body(feed, referral.service_request)
    reasons = [c["coding"][0]["code"] for c in request["reasonCode"]]
    assert reasons == ["O"]  # the DG1 list is cleared; RF1-10 stays
    assert request["requester"] and request["performer"]


def test_a_prd_sent_again_replaces_only_that_role_field_by_field(feed: Feed) -> None:
    send(feed, ref_i12())
    before = the_referral(feed)
    requester_before = body(feed, before.requester)
    # the referred-to provider changes; the referring provider's PRD comes back without phone
    send(feed, ref_i13("UPD3", {}, segment("PRD", {1: "RT", 2: "Valve^Vera^^^Dr^MD",
                                                  7: "5556667778^NPI"}),
                       segment("PRD", {1: "RP", 2: "Primary^Paula^^^Dr^MD",
                                       7: "1234567890^NPI"})))
    after = the_referral(feed)
    assert after.performer != before.performer and after.requester == before.requester
    assert body(feed, after.performer)["name"][0]["family"] == "Valve"
    requester = body(feed, after.requester)
    assert requester["telecom"] == requester_before["telecom"]  # PRD-5 empty: kept
    assert requester["address"] == requester_before["address"]


def test_an_in1_update_changes_the_coverage_field_by_field(feed: Feed) -> None:
    send(feed, ref_i12())
    referral = the_referral(feed)
    (link,) = body(feed, referral.service_request)["insurance"]
    coverage_before = body(feed, link["reference"])
    send(feed, ref_i13("UPD4", {}, segment("IN1", {1: "1", 3: coverage_before["payor"][0]
                                                  ["identifier"]["value"] + "^^^&2.16.840."
                                                  "1.113883.3.9999.20&ISO^NIIP",
                                                  13: "20250630"})))
    (link_after,) = body(feed, the_referral(feed).service_request)["insurance"]
    assert link_after == link
    coverage = body(feed, link["reference"])
    assert coverage["period"] == {"start": "2024-01-01", "end": "2025-06-30"}
    for kept in ("subscriberId", "relationship", "payor", "class", "identifier"):
        assert coverage[kept] == coverage_before[kept], kept


ADT = MSH.format(app="PAS", facility="HOSP", type="ADT^{event}", control="{control}")


def adt(event: str, control: str, pid: dict[int, str]) -> bytes:
    return (ADT.format(event=event, control=control)
            + segment("PID", {1: "1", 3: "ADT-1^^^HOSP^MR", **pid})).encode()


def the_patient(feed: Feed) -> dict[str, Any]:
    with feed.services.db.read() as conn:
        (found,) = conn.execute(sa.select(resources.c.body).where(
            resources.c.resource_type == "Patient")).scalars().all()
    return dict(found)


def test_adt_a08_changes_only_what_it_carries(feed: Feed) -> None:
    send(feed, adt("A04", "ADT1", {5: "Doe^Jane", 7: "19800101", 8: "F",
                                   11: "1 Main St^^Cork^^T12^IRL^H",
                                   13: "^PRN^PH^^353^21^4811223", 19: "987-65-4321"}))
    send(feed, adt("A08", "ADT2", {5: "Doe-Smith^Jane"}))
    patient = the_patient(feed)
    assert patient["name"] == [{"family": "Doe-Smith", "given": ["Jane"]}]
    assert patient["birthDate"] == "1980-01-01" and patient["gender"] == "female"
    assert patient["address"][0]["city"] == "Cork"
    assert values(patient, "telecom") == ["+353 21 4811223"]
    assert "987-65-4321" in values(patient, "identifier")
    send(feed, adt("A08", "ADT3", {11: '""'}))
    patient = the_patient(feed)
    assert "address" not in patient and patient["name"][0]["family"] == "Doe-Smith"


SIU = MSH.format(app="SCHED", facility="CUH", type="SIU^{event}^SIU_S12", control="{control}")


def siu(event: str, control: str, sch: dict[int, str], *more: str) -> bytes:
    return (SIU.format(event=event, control=control)
            + segment("SCH", {1: "APPT9^SCHED", 2: "APPT9^CUH", 26: "R-88812^CLINIC", **sch})
            + "".join(more) + segment("PID", {1: "1", 3: PID_3}) + "RGS|1\r").encode()


def test_siu_s14_keeps_the_time_and_the_people_it_does_not_send(feed: Feed) -> None:
    send(feed, ref_i12())
    send(feed, siu("S12", "SIU1", {7: "ROUTINE^Routine^HL70276", 25: "Booked"},
                   "TQ1|1||||||20240603091500-0500|20240603094500-0500\r",
                   segment("AIP", {1: "1", 3: "1112223334^Heart^Harry^^^Dr"}),
                   segment("AIL", {1: "1", 3: "CARDOPD^^^UMH"})))
    (link,) = [o for o in the_referral(feed).outputs if o.type == "Appointment"]
    before = body(feed, link.reference, "hl7:SCHED^CUH")
    send(feed, siu("S14", "SIU2", {7: "FOLLOWUP^Follow-up^HL70276"}))
    after = body(feed, link.reference, "hl7:SCHED^CUH")
    assert after["reasonCode"][0]["coding"][0]["code"] == "FOLLOWUP"
    for kept in ("start", "end", "participant", "status", "identifier", "basedOn"):
        assert after[kept] == before[kept], kept


ORM = MSH.format(app="ORDERS", facility="GP", type="ORM^O01^ORM_O01", control="{control}")


def orm(control: str, orc: dict[int, str], obr: dict[int, str]) -> bytes:
    return (ORM.format(control=control) + segment("PID", {1: "1", 3: "ORD-P1^^^GP^MR"})
            + segment("ORC", {2: "ORD-77^GP", **orc})
            + segment("OBR", {1: "1", 4: "57133-1^Referral note^LN", **obr})).encode()


def test_an_order_change_keeps_the_requester_and_reason_it_does_not_send(feed: Feed) -> None:
    send(feed, orm("O1", {1: "NW", 12: "D123^Quinn^Maeve^^^Dr"},
                   {27: "^^^^^R", 31: "R07.9^Chest pain^I10"}))
    before = the_referral(feed)
    request_before = body(feed, before.service_request, "hl7:ORDERS^GP")
    send(feed, orm("O2", {1: "XO"}, {27: "^^^^^S"}))
    after = the_referral(feed)
    request = body(feed, after.service_request, "hl7:ORDERS^GP")
    assert request["priority"] == "stat" and after.priority == "stat"
    assert request["requester"] == request_before["requester"]
    assert request["reasonCode"] == request_before["reasonCode"]
    assert after.requester == before.requester and after.reason_text == before.reason_text


def test_a_null_prd_removes_that_provider_and_keeps_the_other(feed: Feed) -> None:
    send(feed, ref_i12())
    before = the_referral(feed)
    send(feed, ref_i13("UPD5", {}, segment("PRD", {1: "RT", 2: '""', 7: '""'})))
    after = the_referral(feed)
    assert not after.performer and after.requester == before.requester
    request = body(feed, after.service_request)
    assert "performer" not in request and request["requester"]


def test_a_null_in1_takes_the_insurance_off_the_referral(feed: Feed) -> None:
    send(feed, ref_i12())
    assert the_referral(feed).payer
    send(feed, ref_i13("UPD6", {}, segment("IN1", {1: "1", 3: '""', 4: '""'})))
    after = the_referral(feed)
    assert not after.payer
    assert "insurance" not in body(feed, after.service_request)
    assert after.requester and after.performer  # the rest of the referral is kept


def test_siu_nulls_delete_the_reason_and_the_practitioners(feed: Feed) -> None:
    send(feed, ref_i12())
    send(feed, siu("S12", "SIU3", {7: "ROUTINE^Routine^HL70276", 25: "Booked"},
                   "TQ1|1||||||20240603091500-0500|20240603094500-0500\r",
                   segment("AIP", {1: "1", 3: "1112223334^Heart^Harry^^^Dr"}),
                   segment("AIL", {1: "1", 3: "CARDOPD^^^UMH"})))
    (link,) = [o for o in the_referral(feed).outputs if o.type == "Appointment"]
    before = body(feed, link.reference, "hl7:SCHED^CUH")
    send(feed, siu("S14", "SIU4", {7: '""'}, segment("AIP", {1: "1", 3: '""'})))
    after = body(feed, link.reference, "hl7:SCHED^CUH")
    assert "reasonCode" not in after
    actors = [p["actor"] for p in after["participant"]]
    assert not any(a.get("reference", "").startswith("Practitioner/") for a in actors)
    assert {"display": "CARDOPD"} in [a for a in actors if "display" in a]  # AIL kept
    assert (after["start"], after["end"]) == (before["start"], before["end"])


OMG = MSH.format(app="ORDERS", facility="GP", type="OMG^O19^OMG_O19", control="{control}")


def test_an_omg_update_keeps_what_it_omits_and_deletes_its_nulls(feed: Feed) -> None:
    def omg(control: str, orc: dict[int, str], obr: dict[int, str]) -> bytes:
        return orm(control, orc, obr).replace(b"ORM^O01^ORM_O01", b"OMG^O19^OMG_O19")

    send(feed, omg("G1", {1: "NW", 12: "D123^Quinn^Maeve^^^Dr"},
                   {27: "^^^^^R", 31: "R07.9^Chest pain^I10"}))
    before = the_referral(feed)
    send(feed, omg("G2", {1: "XO"}, {27: "^^^^^S"}))
    request = body(feed, the_referral(feed).service_request, "hl7:ORDERS^GP")
    assert request["priority"] == "stat" and request["reasonCode"]
    assert request["requester"] == body(feed, before.service_request,
                                        "hl7:ORDERS^GP")["requester"]
    send(feed, omg("G3", {1: "XO"}, {31: '""'}))
    after = the_referral(feed)
    request = body(feed, after.service_request, "hl7:ORDERS^GP")
    assert "reasonCode" not in request and request["priority"] == "stat"
    assert after.requester == before.requester
