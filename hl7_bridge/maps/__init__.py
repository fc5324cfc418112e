"""v2 message -> FHIR resources, pure: `to_mapped(message, sender, config)`.

The result carries the resources and the business keys the lifecycle step needs (which
referral, which patient identifiers, what happened). Ids are derived from business keys, except
a new patient's and ServiceRequest's (time-ordered, ids.py): the writer finds those records
by identifier and referral key, so mapping the same message twice stores the same resources.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hl7_bridge.config import SenderConfig
from hl7_bridge.maps.appointment import placer_order_keys, to_appointment
from hl7_bridge.maps.coverage import to_coverages
from hl7_bridge.maps.document import document_like, document_order_keys, to_document_reference
from hl7_bridge.maps.patient import mrg_identifiers, to_patient
from hl7_bridge.maps.referral import (
    order_groups,
    order_keys,
    order_service_request,
    ref_service_request,
    referral_keys,
)
from hl7_bridge.message import Message, Segment


class MappingError(ValueError):
    """The content cannot be mapped (a required value is missing); quarantined."""


@dataclass
class Mapped:
    kind: str  # patient | merge | referral | order | appointment | document | status | ignored
    event: str
    patient: dict[str, Any] | None = None
    service_request: dict[str, Any] | None = None
    appointment: dict[str, Any] | None = None
    document: dict[str, Any] | None = None
    practitioners: list[dict[str, Any]] = field(default_factory=list)
    #: IN1/IN2: Coverage resources with their payer Organizations and RelatedPersons
    insurance: list[dict[str, Any]] = field(default_factory=list)
    #: the referral's business keys (keys.py: RF1-6 / order numbers), primary first
    referral_keys: list[str] = field(default_factory=list)
    #: identifiers a merge (A40 MRG-1) retires
    merged: list[dict[str, Any]] = field(default_factory=list)
    #: order control / referral status codes that drive the lifecycle
    codes: dict[str, str] = field(default_factory=dict)
    #: OMG/ORM: the ORC and OBR of the order that is the referral
    order_group: tuple[Segment | None, Segment | None] = (None, None)

    @property
    def referral_key(self) -> str:
        """The primary business key ("" when the message names no referral)."""
        return self.referral_keys[0] if self.referral_keys else ""

    @property
    def resources(self) -> list[dict[str, Any]]:
        found = [self.patient, *self.practitioners, *self.insurance, self.service_request,
                 self.appointment, self.document]
        return [r for r in found if r is not None]

    @property
    def coverages(self) -> list[dict[str, Any]]:
        return [r for r in self.insurance if r["resourceType"] == "Coverage"]

    @property
    def payer(self) -> str:
        """The first Coverage's payer name ("" when the message carries no IN1)."""
        return next((str(p.get("display", "")) for c in self.coverages
                     for p in c.get("payor", [])[:1]), "")


def _patient_ref(mapped: Mapped) -> str:
    return f"Patient/{mapped.patient['id']}" if mapped.patient else ""


def to_mapped(msg: Message, sender: str, config: SenderConfig) -> Mapped:
    kind = msg.message_type
    mapped = Mapped("ignored", f"{kind}^{msg.trigger_event}")
    pid = msg.first("PID")
    if pid is not None:
        mapped.patient = to_patient(pid, sender, config)
        if kind in ("ADT", "REF", "OMG", "ORM"):
            mapped.insurance = to_coverages(msg, sender, config, mapped.patient)
    if kind == "ADT":
        return _adt(msg, mapped, sender, config)
    if kind in ("REF", "RRI"):
        return _referral(msg, mapped, sender, config)
    if kind in ("OMG", "ORM"):
        return _order(msg, mapped, sender, config)
    if kind == "SIU":
        appointment, practitioners = to_appointment(msg, sender, config,
                                                    _patient_ref(mapped) or None)
        mapped.kind, mapped.appointment = "appointment", appointment
        mapped.practitioners += practitioners
        mapped.referral_keys = placer_order_keys(msg)
        return mapped
    if kind in ("MDM", "ORU"):
        if kind == "ORU" and not document_like(msg):
            return mapped
        document, practitioners = to_document_reference(msg, sender, config,
                                                        _patient_ref(mapped) or None)
        mapped.kind, mapped.document = "document", document
        mapped.practitioners += practitioners
        mapped.referral_keys = document_order_keys(msg)
        return mapped
    return mapped


def _adt(msg: Message, mapped: Mapped, sender: str, config: SenderConfig) -> Mapped:
    if mapped.patient is None or not mapped.patient.get("identifier"):
        raise MappingError("PID-3 holds no patient identifier; the patient cannot be matched")
    mapped.kind = "patient"
    if msg.trigger_event == "A40":
        mrg = msg.first("MRG")
        mapped.merged = mrg_identifiers(mrg, sender, config) if mrg is not None else []
        if not mapped.merged:
            raise MappingError("MRG-1 holds no prior patient identifier to merge")
        mapped.kind = "merge"
    return mapped


def _referral(msg: Message, mapped: Mapped, sender: str, config: SenderConfig) -> Mapped:
    keys = referral_keys(msg)
    if not keys:
        raise MappingError("RF1-6 originating referral identifier is missing")
    mapped.referral_keys = keys
    rf1 = msg.first("RF1")
    mapped.codes = {"rf1_status": rf1.get(1).upper() if rf1 is not None else "",
                    "rf1_action": rf1.get(25).upper() if rf1 is not None else ""}
    if msg.message_type == "RRI" or msg.trigger_event == "I15":
        mapped.kind = "status"
        return mapped
    if mapped.patient is None:
        raise MappingError("PID is missing")
    sr, practitioners = ref_service_request(msg, sender, config, _patient_ref(mapped))
    mapped.kind, mapped.service_request = "referral", sr
    mapped.practitioners += practitioners
    _insure(mapped)
    return mapped


def _insure(mapped: Mapped) -> None:
    """ServiceRequest.insurance: the message's Coverages, in IN1 order, each once (an IN1
    repeated is the same Coverage)."""
    if mapped.service_request is not None and mapped.coverages:
        named = dict.fromkeys(c["id"] for c in mapped.coverages)
        mapped.service_request["insurance"] = [{"reference": f"Coverage/{i}"} for i in named]


def _order(msg: Message, mapped: Mapped, sender: str, config: SenderConfig) -> Mapped:
    wanted = set(config.referral_order_codes)
    found = next(((orc, obr) for orc, obr, _ in order_groups(msg)
                  if "*" in wanted or (obr is not None and obr.get(4) in wanted)), None)
    if found is None:
        return mapped  # orders that are not referrals are stored, not mapped
    orc, obr = found
    if mapped.patient is None:
        raise MappingError("PID is missing")
    keys = order_keys(msg, orc, obr)
    if not keys:
        raise MappingError("ORC-2/OBR-2 placer order number is missing")
    sr, practitioners = order_service_request(msg, orc, obr, sender, config,
                                              _patient_ref(mapped))
    mapped.kind, mapped.service_request, mapped.referral_keys = "order", sr, keys
    mapped.order_group = (orc, obr)
    mapped.practitioners += practitioners
    _insure(mapped)
    mapped.codes = {"orc1": orc.get(1).upper() if orc is not None else "",
                    "orc5": orc.get(5).upper() if orc is not None else ""}
    return mapped


def all_order_requests(msg: Message, sender: str, config: SenderConfig
                       ) -> list[dict[str, Any]]:
    """Every ORC/OBR order as a ServiceRequest (golden comparisons of OMG/ORM samples)."""
    pid = msg.first("PID")
    patient = f"Patient/{to_patient(pid, sender, config)['id']}" if pid is not None else ""
    return [order_service_request(msg, orc, obr, sender, config, patient)[0]
            for orc, obr, _ in order_groups(msg)]
