"""Every outbound v2 message Refloop builds is valid against hl7apy's v2.5.1 message structures
(required segments, groups and fields, in order), checked by hl7apy's strict validator, a v2
library nobody here wrote: ACKs, RRI^I12/I13/I14/I15 and SIU^S12/S13/S15/S26 to the sending
EHR, SRM^S01 to a scheduling system."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from hl7_bridge.ack import AckError, build_ack
from hl7_bridge.config import load_config
from hl7_bridge.header import parse_header
from hl7_bridge.outbound import Outbound
from hl7_bridge.partner_messages import PartnerMessages
from hl7_bridge.srm import build_srm
from referrals.model import Referral, Stage

ORIGINAL = b"MSH|^~\\&|EHR|CLINIC|REFLOOP|REFLOOP|20260101120000||REF^I12|CTRL-1|P|2.5.1\r"
APPOINTMENT = {"id": "ap-1", "start": "2026-01-05T09:00:00Z", "end": "2026-01-05T09:30:00Z",
               "status": "booked"}


def problems(text: str) -> str:
    """hl7apy's strict report ("" when the message is valid)."""
    message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    report = Path(tempfile.mkdtemp()) / "report.txt"
    try:
        message.validate(report_file=str(report))
    except Exception:  # hl7apy raises the first error; the report lists them all
        return report.read_text(encoding="utf-8")
    return ""


class StoredPatient:
    """The ResourceStore's one read the builder makes (the patient the EHR sent us)."""

    def try_get(self, rtype: str, rid: str, server: str = "") -> dict[str, Any]:
        return {"resourceType": "Patient", "id": rid, "birthDate": "1980-02-03",
                "identifier": [{"system": "urn:oid:1.2.3.4", "value": "MRN-1"}],
                "name": [{"family": "Lopez", "given": ["Ana"]}]}


class Services:
    resources = StoredPatient()


def outbound() -> Outbound:
    sender = Outbound(Services(), load_config({}))
    sender._original_control_id = lambda referral: "CTRL-1"  # type: ignore[method-assign]
    return sender


REFERRAL = Referral(id="11111111-2222-4333-8444-555555555555",
                    source_key="hl7|EHR^CLINIC|PL-1^EHR", service_request="ServiceRequest/x",
                    patient="Patient/p1", priority="urgent", specialty="cardiology",
                    stage=Stage.ACCEPTED)


@pytest.mark.parametrize("code", ["AA", "AE", "AR"])
def test_acks(code: str) -> None:
    errors = (AckError(207, "bad", "PID", 1, 3),) if code != "AA" else ()
    assert problems(build_ack(parse_header(ORIGINAL), code, errors=errors).decode()) == ""


@pytest.mark.parametrize(("payload", "kind"), [
    ({"stage": "accepted"}, "RRI^I12"), ({"stage": "declined"}, "RRI^I12"),
    ({"stage": "cancelled"}, "RRI^I14"), ({"stage": "loop-closed"}, "RRI^I13"),
    ({"stage": "status"}, "RRI^I15"),
    ({"stage": "scheduled", "appointment": APPOINTMENT}, "SIU^S12"),
    ({"stage": "scheduled", "appointment": APPOINTMENT, "rescheduled": True}, "SIU^S13"),
    ({"stage": "appointment-cancelled", "appointment": APPOINTMENT}, "SIU^S15"),
    ({"stage": "no-show", "appointment": APPOINTMENT}, "SIU^S26"),
])
def test_status_messages_to_the_sending_ehr(payload: dict[str, Any], kind: str) -> None:
    message, built = outbound().build(REFERRAL, {"sender": "EHR^CLINIC", **payload}, "C-9")
    assert built == kind
    assert problems(message.decode()) == ""


def test_siu_carries_the_placer_number_as_an_entity_identifier() -> None:
    message, _ = outbound().build(REFERRAL, {"sender": "EHR^CLINIC", "stage": "scheduled",
                                             "appointment": APPOINTMENT}, "C-9")
    sch = next(s for s in message.decode().split("\r") if s.startswith("SCH|"))
    assert sch.split("|")[26] == "PL-1^EHR"  # components, not an escaped ^


def test_srm_to_a_scheduling_system() -> None:
    payload = {"partner": "SCHED^CLINIC", "request_id": "rq-1", "specialty": "cardiology",
               "referral_id": REFERRAL.id, "patient": "Patient/p1", "patient_name": "Ana Lopez",
               "birth_date": "1980-02-03",
               "preferences": {"days": ["mon"], "times": ["morning"], "earliest": "2026-01-02"}}
    assert problems(build_srm(payload, "C-1", load_config({})).decode()) == ""


DOCUMENT_PDF = {"id": "DocumentReference/dr-1", "content_type": "application/pdf",
                "data_b64": "JVBERi0xLjQK", "date": "2026-01-06T10:00:00Z"}
DOCUMENT_TEXT = {"id": "dr-2", "content_type": "text/plain",
                 "data_b64": "Q29uc3VsdCBub3RlCkFsbCB3ZWxsLg=="}


@pytest.mark.parametrize("payload", [
    {"message": "REF^I15", "text": "Where is the consult note?"},
    {"message": "RRI^I12", "status": "A", "text": "Seen in clinic"},
    {"message": "RRI^I12", "status": "R"},
    {"message": "MDM^T02", "document": DOCUMENT_PDF},
    {"message": "MDM^T02", "document": DOCUMENT_TEXT},
], ids=["REF^I15", "RRI^I12-accepted", "RRI^I12-rejected", "MDM^T02-pdf", "MDM^T02-text"])
def test_partner_messages(payload: dict[str, Any]) -> None:
    """The closed loop's messages to a named partner (a referring practice, a scheduler)."""
    builder = PartnerMessages(Services(), load_config({}))
    message = builder.build(REFERRAL, {"referral_id": REFERRAL.id, **payload}, "GP^PRACTICE",
                            "RFP-1")
    assert message.decode().split("\r")[0].split("|")[8].startswith(payload["message"])
    assert problems(message.decode()) == ""
