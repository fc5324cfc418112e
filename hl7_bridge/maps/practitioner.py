"""PRD and XCN fields -> Practitioner (the IG has no PRD map; our choice, see docs/hl7v2.md)."""

from __future__ import annotations

from typing import Any

from hl7_bridge.config import SenderConfig
from hl7_bridge.datatypes import (
    Memo,
    hd_system,
    stable_id,
    to_address,
    to_human_name,
    to_telecom,
    xcn_key,
)
from hl7_bridge.message import Segment

_PRD = Memo()


def from_prd(prd: Segment, sender: str, config: SenderConfig) -> dict[str, Any]:
    """PRD-2 name, PRD-3 address, PRD-5 telecom, PRD-7 identifiers (PLN: id^type^state)."""
    key = (sender, prd.d, *prd.fields[2:8], *sorted(config.authorities.items()))
    found: dict[str, Any] = _PRD.get(key, lambda: _from_prd(prd, sender, config))
    return found


def _from_prd(prd: Segment, sender: str, config: SenderConfig) -> dict[str, Any]:
    ident = prd.get(7)
    key = f"id:{ident}^{prd.get(7, 2)}" if ident else "name:" + prd.raw(2)
    practitioner: dict[str, Any] = {"resourceType": "Practitioner",
                                    "id": stable_id("Practitioner", sender, key)}
    if ident:
        practitioner["identifier"] = [{
            "system": hd_system(prd.get(7, 2), "", "", config.authorities, sender),
            "value": ident}]
    name = to_human_name(prd, 2)
    if name:
        practitioner["name"] = [name]
    address = to_address(prd, 3)
    if address:
        practitioner["address"] = [address]
    telecom = [t for r in range(len(prd.repetitions(5))) if (t := to_telecom(prd, 5, r, "work"))]
    if telecom:
        practitioner["telecom"] = telecom
    return practitioner


def from_xcn(seg: Segment, number: int, sender: str, config: SenderConfig,
             rep: int = 0) -> dict[str, Any] | None:
    """XCN -> Practitioner: XCN.1 id (system from XCN.9), XCN.2-6 name."""
    if not seg.get(number, 1, rep=rep) and not seg.get(number, 2, rep=rep):
        return None
    practitioner: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": stable_id("Practitioner", sender, xcn_key(seg, number, rep))}
    ident = seg.get(number, 1, rep=rep)
    if ident:
        practitioner["identifier"] = [{
            "system": hd_system(seg.get(number, 9, 1, rep), seg.get(number, 9, 2, rep),
                                seg.get(number, 9, 3, rep), config.authorities, sender),
            "value": ident}]
    name = to_human_name(seg, number, rep, offset=1)
    if name:
        practitioner["name"] = [name]
    return practitioner
