"""REF/RRI (RF1, PRD) and OMG/ORM (ORC, OBR) -> ServiceRequest.

The IG has no RF1/PRD map: RF1 follows the choices in docs/hl7v2.md (RF1-1 through table 0283,
RF1-2 priority, RF1-6/RF1-11 identifiers). ORC/OBR follow the IG (ORC[ServiceRequest],
OBR[ServiceRequest]).
"""

from __future__ import annotations

from typing import Any

from hl7_bridge.config import SenderConfig
from hl7_bridge.datatypes import to_codeable, to_datetime, to_ei
from hl7_bridge.ids import recent_id
from hl7_bridge.keys import application_namespaces, entity_keys, first_keys
from hl7_bridge.maps.practitioner import from_prd, from_xcn
from hl7_bridge.message import Message, Segment

#: RF1-1 (table 0283) -> ServiceRequest.status. Pending is "active": the request is in force,
#: waiting for the recipient (FHIR-Converter uses on-hold); Expired is "revoked".
RF1_STATUS = {"A": "active", "P": "active", "R": "revoked", "E": "revoked"}
PRIORITY = {"S": "stat", "A": "asap", "R": "routine", "U": "urgent", "P": "routine",
            "T": "routine", "C": "routine"}
#: ORC-5 order status (IG OrderStatus map)
ORC5_STATUS = {"CA": "revoked", "DC": "revoked", "RP": "revoked", "CM": "completed",
               "ER": "entered-in-error", "HD": "on-hold", "IP": "active", "SC": "active",
               "A": "active"}
#: ORC-1 order control (IG OrderControlCode map, except CA: the placer withdrawing its order
#: is revoked, where the IG keeps "active" for a cancel request), used when ORC-5 is empty
ORC1_STATUS = {"NW": "active", "OK": "active", "HD": "on-hold", "RL": "active", "RO": "active",
               "CA": "revoked", "CR": "revoked", "DC": "revoked", "DR": "revoked",
               "OC": "revoked", "OD": "revoked", "HR": "on-hold", "OH": "on-hold",
               "XO": "active", "SC": "active", "SN": "active"}
REFERRAL_CATEGORY = {"coding": [{"system": "http://snomed.info/sct", "code": "3457005",
                                 "display": "Patient referral"}]}


def ref_service_request(msg: Message, sender: str, config: SenderConfig, patient: str
                        ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The referral's ServiceRequest and its practitioners (PRD RP requester, RT performer)."""
    rf1 = msg.first("RF1")
    app = application_namespaces(msg)
    key = referral_keys(msg)[0]
    sr: dict[str, Any] = {"resourceType": "ServiceRequest",
                          "id": recent_id("ServiceRequest", sender, key),
                          "status": "active", "intent": "order",
                          "category": [REFERRAL_CATEGORY], "subject": {"reference": patient}}
    identifiers = []
    if rf1 is not None:
        placer = to_ei(rf1, 6, config.authorities, sender, kind="PLAC", application=app)
        identifiers += [placer] if placer else []
        identifiers += [i for r in range(len(rf1.repetitions(11)))
                        if (i := to_ei(rf1, 11, config.authorities, sender, r, "FILL", app))]
        sr["status"] = RF1_STATUS.get(rf1.get(1).upper(), "active")
        if rf1.get(25).upper() == "D":
            sr["status"] = "entered-in-error"
        priority = PRIORITY.get(rf1.get(2).upper())
        if priority:
            sr["priority"] = priority
        authored = to_datetime(rf1.get(9) or rf1.get(7), config.time_zone)
        if authored:
            sr["authoredOn"] = authored
        period = {k: v for k, v in (("start", to_datetime(rf1.get(7), config.time_zone)),
                                    ("end", to_datetime(rf1.get(8), config.time_zone))) if v}
        if period:
            sr["occurrencePeriod"] = period
        reason = to_codeable(rf1, 10)
        if reason:
            sr["reasonCode"] = [reason]
        kind = to_codeable(rf1, 3)
        if kind:
            sr["category"] = [REFERRAL_CATEGORY, kind]
    if msg.trigger_event == "I14":
        sr["status"] = "revoked"
    if identifiers:
        sr["identifier"] = identifiers
    obr = msg.first("OBR")
    code = to_codeable(obr, 4) if obr is not None else None
    if code:
        sr["code"] = code
    sr["reasonCode"] = sr.get("reasonCode", []) + [
        c for dg1 in msg.all("DG1") if (c := to_codeable(dg1, 3))]
    if not sr["reasonCode"]:
        del sr["reasonCode"]
    notes = [{"text": t} for nte in msg.all("NTE") if (t := nte.whole(3))]
    if notes:
        sr["note"] = notes
    practitioners: list[dict[str, Any]] = []
    for prd in msg.all("PRD"):
        if not prd.get(2) and not prd.get(7):
            continue  # no name and no id: nobody (an update's "" removed them)
        practitioner = from_prd(prd, sender, config)
        practitioners.append(practitioner)
        role = prd.get(1).upper()
        reference = {"reference": f"Practitioner/{practitioner['id']}"}
        if role == "RP" and "requester" not in sr:
            sr["requester"] = reference
        elif role == "RT":
            sr.setdefault("performer", []).append(reference)
    return sr, practitioners


def referral_keys(msg: Message) -> list[str]:
    """The referral's business keys (keys.py), primary first: RF1-6 and RF1-11 (REF/RRI),
    else the order numbers of the first ORC/OBR."""
    rf1 = msg.first("RF1")
    app = application_namespaces(msg)
    if rf1 is not None and entity_keys(rf1, 6, app):
        return [*entity_keys(rf1, 6, app), *(k for rep in range(len(rf1.repetitions(11)))
                                            for k in entity_keys(rf1, 11, app, rep=rep))]
    return order_keys(msg, msg.first("ORC"), msg.first("OBR"))


def order_keys(msg: Message, orc: Segment | None, obr: Segment | None) -> list[str]:
    """Placer (ORC-2, else OBR-2), filler (ORC-3, else OBR-3) and placer group (ORC-4) order
    numbers as keys, primary first."""
    app = application_namespaces(msg)
    placer = first_keys(entity_keys(orc, 2, app), entity_keys(obr, 2, app))
    filler = first_keys(entity_keys(orc, 3, app, prefix="filler:"),
                        entity_keys(obr, 3, app, prefix="filler:"))
    group = entity_keys(orc, 4, app, prefix="group:")
    return [*placer, *filler, *group]


def order_groups(msg: Message) -> list[tuple[Segment | None, Segment | None, list[Segment]]]:
    """(ORC, OBR, NTEs) per order: an OBR belongs to the ORC before it."""
    out: list[tuple[Segment | None, Segment | None, list[Segment]]] = []
    orc: Segment | None = None
    for seg in msg:
        if seg.name == "ORC":
            orc = seg
            out.append((orc, None, []))
        elif seg.name == "OBR":
            if out and out[-1][1] is None and out[-1][0] is orc:
                out[-1] = (orc, seg, [])
            else:
                out.append((orc, seg, []))
        elif seg.name == "NTE" and out and out[-1][1] is not None:
            out[-1][2].append(seg)
    return out


def order_service_request(msg: Message, orc: Segment | None, obr: Segment | None,
                          sender: str, config: SenderConfig, patient: str
                          ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One ORC/OBR order -> ServiceRequest (IG ORC/OBR maps) and its requester."""
    key = next(iter(order_keys(msg, orc, obr)), "") or f"{msg.control_id}|{id(obr)}"
    sr: dict[str, Any] = {"resourceType": "ServiceRequest",
                          "id": recent_id("ServiceRequest", sender, key),
                          "status": "active", "intent": "order",
                          "subject": {"reference": patient}}
    if orc is not None:
        status = ORC5_STATUS.get(orc.get(5).upper()) or ORC1_STATUS.get(orc.get(1).upper())
        sr["status"] = status or "active"
    identifiers: list[dict[str, Any]] = []
    app = application_namespaces(msg)
    for seg, number, kind in ((orc, 2, "PLAC"), (obr, 2, "PLAC"), (orc, 3, "FILL"),
                              (obr, 3, "FILL"), (orc, 4, "PGN")):
        identifier = to_ei(seg, number, config.authorities, sender, kind=kind,
                           application=app) \
            if seg is not None else None
        if identifier and all(identifier["value"] != i["value"] for i in identifiers):
            identifiers.append(identifier)
    if identifiers:
        sr["identifier"] = identifiers
    code = to_codeable(obr, 4) if obr is not None else None
    if code:
        sr["code"] = code
    priority = _order_priority(msg, orc, obr)
    if priority:
        sr["priority"] = priority
    reason = to_codeable(obr, 31) if obr is not None else None
    if reason:
        sr["reasonCode"] = [reason]
    authored = to_datetime(orc.get(9), config.time_zone) if orc is not None else None
    if authored:
        sr["authoredOn"] = authored
    practitioners = []
    requester = None
    if orc is not None:
        requester = from_xcn(orc, 12, sender, config)
    if requester is None and obr is not None:
        requester = from_xcn(obr, 16, sender, config)
    if requester is not None:
        practitioners.append(requester)
        sr["requester"] = {"reference": f"Practitioner/{requester['id']}"}
    return sr, practitioners


def _order_priority(msg: Message, orc: Segment | None, obr: Segment | None) -> str:
    tq1 = msg.first("TQ1")
    for value in ((tq1.get(9) if tq1 is not None else ""),
                  (orc.get(7, 6) if orc is not None else ""),
                  (obr.get(27, 6) if obr is not None else ""),
                  (obr.get(5) if obr is not None else "")):
        if value:
            return PRIORITY.get(value.upper()[:1], "")
    return ""
