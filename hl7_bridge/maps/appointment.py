"""SIU (SCH, TQ1, AIS, AIP, AIL) -> Appointment (IG SIU_S12 / SCH[Appointment] maps)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hl7_bridge.config import SenderConfig
from hl7_bridge.datatypes import stable_id, to_codeable, to_datetime, to_ei
from hl7_bridge.keys import application_namespaces, entity_keys, first_keys
from hl7_bridge.maps.practitioner import from_xcn
from hl7_bridge.message import Message

#: SCH-25 filler status (IG FillerStatusCodes map; "Arrived", which many schedulers send though
#: table 0278 lacks it, as FHIR `arrived`)
FILLER_STATUS = {"PENDING": "pending", "WAITLIST": "waitlist", "BOOKED": "booked",
                 "STARTED": "checked-in", "ARRIVED": "arrived", "COMPLETE": "fulfilled",
                 "CANCELLED": "cancelled",
                 "DELETED": "entered-in-error", "NOSHOW": "noshow", "DC": "cancelled"}
#: the trigger event wins over SCH-25 for these
EVENT_STATUS = {"S15": "cancelled", "S16": "cancelled", "S17": "entered-in-error",
                "S26": "noshow"}


def appointment_key(msg: Message) -> str:
    """SCH-2 filler appointment id, else SCH-1 placer appointment id (primary key)."""
    app = application_namespaces(msg)
    sch = msg.first("SCH")
    return next(iter(first_keys(entity_keys(sch, 2, app), entity_keys(sch, 1, app))), "")


def placer_order_keys(msg: Message) -> list[str]:
    """The referral's keys: SCH-26 placer order number, then SCH-27 filler order number."""
    app = application_namespaces(msg)
    sch = msg.first("SCH")
    return [*entity_keys(sch, 26, app), *entity_keys(sch, 27, app, prefix="filler:")]


def to_appointment(msg: Message, sender: str, config: SenderConfig, patient: str | None
                   ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    sch = msg.first("SCH")
    assert sch is not None, "SIU without SCH is refused on the ACK path"
    appointment: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": stable_id("Appointment", appointment_key(msg) or msg.control_id),
        "status": EVENT_STATUS.get(msg.trigger_event)
        or FILLER_STATUS.get(sch.get(25).upper(), "booked"),
    }
    app = application_namespaces(msg)
    identifiers = [i for i in (
        to_ei(sch, 1, config.authorities, sender, kind="PLAC", application=app),
        to_ei(sch, 2, config.authorities, sender, kind="FILL", application=app)) if i]
    if identifiers:
        appointment["identifier"] = identifiers
    kind = to_codeable(sch, 8)
    if kind:
        appointment["appointmentType"] = kind
    reason = to_codeable(sch, 7)
    if reason:
        appointment["reasonCode"] = [reason]
    start, end = _timing(msg, config.time_zone)
    if start:
        appointment["start"] = start
    if end:
        appointment["end"] = end
    participants: list[dict[str, Any]] = []
    if patient:
        participants.append({"actor": {"reference": patient}, "status": "accepted"})
    practitioners = []
    for aip in msg.all("AIP"):
        practitioner = from_xcn(aip, 3, sender, config)
        if practitioner is not None:
            practitioners.append(practitioner)
            participants.append({"actor": {"reference": f"Practitioner/{practitioner['id']}"},
                                 "status": "accepted"})
    for ail in msg.all("AIL"):
        place = ail.get(3, 1) or ail.get(3, 4)
        if place:
            participants.append({"actor": {"display": place}, "status": "accepted"})
    appointment["participant"] = participants or [{"status": "needs-action"}]
    return appointment, practitioners


def _timing(msg: Message, tz: str) -> tuple[str | None, str | None]:
    tq1, sch, ais = msg.first("TQ1"), msg.first("SCH"), msg.first("AIS")
    if tq1 is not None and tq1.get(7):
        return to_datetime(tq1.get(7), tz), to_datetime(tq1.get(8), tz)
    if sch is not None and sch.get(11, 4):
        return to_datetime(sch.get(11, 4), tz), to_datetime(sch.get(11, 5), tz)
    if ais is not None and ais.get(4):
        start = to_datetime(ais.get(4), tz)
        return start, _plus_minutes(start, ais.get(7), ais.get(8))
    return None, None


def _plus_minutes(start: str | None, amount: str, unit: str) -> str | None:
    if not start or "T" not in start or not amount.isdigit():
        return None
    factor = {"S": 1 / 60, "H": 60, "D": 1440}.get(unit.upper()[:1], 1)
    moment = datetime.fromisoformat(start) + timedelta(minutes=int(amount) * factor)
    return moment.isoformat()
