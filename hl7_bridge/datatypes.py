"""v2 data types to FHIR R4 datatypes (HL7 v2-to-FHIR IG data type maps), pure functions.

Values arrive as lists of components (already split, not yet unescaped for sub-components);
`Segment.get` does the unescaping, so most functions take a segment and a field number.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hl7_bridge.message import Segment

NAMESPACE = uuid.UUID("0b7c2a1e-51f6-4d0e-9a5c-6c2e8f1d3a47")

CODE_SYSTEMS = {
    "LN": "http://loinc.org", "LOINC": "http://loinc.org", "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct", "I10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm", "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "CPT": "http://www.ama-assn.org/go/cpt", "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    "UCUM": "http://unitsofmeasure.org", "ISO3166_1": "urn:iso:std:iso:3166",
}

_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?$")


class Memo:
    """Mapped values that repeat from message to message (the same referring doctors and
    payers), keyed by their source text. Bounded: emptied when full. The values are shared by
    every message that maps to them: read-only (resources are never changed after they are
    mapped; effects.py puts new dicts)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.data: dict[Any, Any] = {}

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        found = self.data.get(key)
        if found is None:
            if len(self.data) >= self.size:
                self.data.clear()
            found = self.data[key] = make()
        return found


@lru_cache(maxsize=65536)
def stable_id(*parts: str) -> str:
    """A resource id derived from its business key: re-running a mapping gives the same id
    (cached: practitioners, payers and codes repeat from message to message)."""
    return str(uuid.uuid5(NAMESPACE, "|".join(parts)))


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def to_datetime(value: str, tz: str = "UTC") -> str | None:
    """v2 DTM/TS -> FHIR dateTime, keeping precision; a time without offset gets the sender's
    zone; a supplied offset is never shifted. None for an unreadable value."""
    m = _DTM.match(value.strip().split("^")[0]) if value else None
    if not m:
        return None
    year, month, day, hour, minute, second, fraction, offset = m.groups()
    if not month:
        return year
    if not day:
        return f"{year}-{month}"
    date = f"{year}-{month}-{day}"
    if not hour:
        return date
    stamp = f"{hour}:{minute or '00'}:{second or '00'}{fraction or ''}"
    try:
        datetime.fromisoformat(f"{date}T{hour}:{minute or '00'}:{second or '00'}")
    except ValueError:
        return None
    if offset:
        return f"{date}T{stamp}{offset[:3]}:{offset[3:]}"
    local = datetime.fromisoformat(f"{date}T{hour}:{minute or '00'}:{second or '00'}")
    aware = local.replace(tzinfo=zone(tz))
    off = aware.strftime("%z")
    return f"{date}T{stamp}{off[:3]}:{off[3:]}"


def to_date(value: str) -> str | None:
    moment = to_datetime(value)
    return moment[:10] if moment else None


def hd_system(namespace: str, universal: str, universal_type: str,
              authorities: dict[str, str], sender: str) -> str:
    """Identifier.system for an assigning authority (HD): configured map first, then OIDs/UUIDs,
    then a URN scoped to the sender so that bare local ids never match across senders."""
    for key in (namespace, universal):
        if key and key in authorities:
            return authorities[key]
    if universal and universal_type.upper() in ("ISO", "") and \
            re.fullmatch(r"[0-2](\.\d+)+", universal):
        return f"urn:oid:{universal}"
    if universal and universal_type.upper() == "UUID":
        return f"urn:uuid:{universal}"
    if universal.startswith(("http://", "https://", "urn:")):
        return universal
    local = namespace or universal or "local"
    return f"urn:refloop:hl7:{_slug(sender)}:{_slug(local)}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.\-]+", "-", text).strip("-") or "x"


def _at(values: list[str], component: int) -> str:
    return values[component - 1] if component <= len(values) else ""


def to_identifier(seg: Segment, number: int, rep: int, authorities: dict[str, str],
                  sender: str) -> dict[str, Any] | None:
    """CX -> Identifier (CX.1 value, CX.4 authority -> system, CX.5 type)."""
    values = seg.values(number, rep)
    value = _at(values, 1)
    if not value:
        return None
    system = hd_system(_at(values, 4), seg.get(number, 4, 2, rep),
                       seg.get(number, 4, 3, rep), authorities, sender)
    identifier: dict[str, Any] = {"system": system, "value": value}
    kind = _at(values, 5)
    if kind:
        identifier["type"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": kind}]}
    return identifier


def to_ei(seg: Segment, number: int, authorities: dict[str, str], sender: str,
          rep: int = 0, kind: str = "", application: tuple[str, ...] = ()
          ) -> dict[str, Any] | None:
    """EI (entity id ^ namespace ^ universal id ^ type) -> Identifier. An EI without a
    namespace belongs to the sending application (`application`: MSH-3.1, MSH-3.2)."""
    value = seg.get(number, 1, rep=rep).strip()
    if not value:
        return None
    namespace, universal = seg.get(number, 2, rep=rep), seg.get(number, 3, rep=rep)
    kind_of_universal = seg.get(number, 4, rep=rep)
    if not namespace and not universal and application:
        namespace = application[0]
        universal, kind_of_universal = (application[1:] or ("",))[0], ""
    identifier: dict[str, Any] = {
        "system": hd_system(namespace, universal, kind_of_universal, authorities, sender),
        "value": value}
    if kind:
        identifier["type"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": kind}]}
    return identifier


def to_human_name(seg: Segment, number: int, rep: int = 0, offset: int = 0
                  ) -> dict[str, Any] | None:
    """XPN (or the name part of XCN, with `offset` 1) -> HumanName."""
    values = seg.values(number, rep)
    family = _at(values, 1 + offset)
    given = [g for g in (_at(values, 2 + offset), _at(values, 3 + offset)) if g]
    if not family and not given:
        return None
    name: dict[str, Any] = {}
    if family:
        name["family"] = family
    if given:
        name["given"] = given
    suffix = [s for s in (_at(values, 4 + offset),
                          _at(values, 6 + offset) if not offset else "") if s]
    if suffix:
        name["suffix"] = suffix
    prefix = _at(values, 5 + offset)
    if prefix:
        name["prefix"] = [prefix]
    use = {"L": "official", "A": "nickname", "N": "nickname", "M": "maiden", "C": "old",
           "D": "usual"}.get(_at(values, 7 + offset))
    if use and not offset:
        name["use"] = use
    return name


def to_address(seg: Segment, number: int, rep: int = 0) -> dict[str, Any] | None:
    values = seg.values(number, rep)
    if not any(values):
        return None
    parts = {k: _at(values, n) for k, n in
             (("line1", 1), ("line2", 2), ("city", 3), ("state", 4), ("postalCode", 5),
              ("country", 6), ("use", 7), ("district", 9))}
    if not any(v for k, v in parts.items() if k != "use"):
        return None
    address: dict[str, Any] = {}
    lines = [seg.text(sub) for number_part in (1, 2)
             for sub in _subs(seg, number, number_part, rep)]
    if any(lines):
        address["line"] = [x for x in lines if x]
    for key in ("city", "district", "state", "postalCode", "country"):
        if parts[key]:
            address[key] = parts[key]
    use = {"H": "home", "B": "work", "O": "work", "C": "temp", "BA": "old"}.get(parts["use"])
    if use:
        address["use"] = use
    return address


def _subs(seg: Segment, number: int, component: int, rep: int) -> list[str]:
    """Raw sub-components of one component (XAD.1 SAD: street ^ street name ^ dwelling)."""
    comps = seg.components(number, rep)
    if component > len(comps):
        return []
    return comps[component - 1].split(seg.d.subcomponent)


def to_telecom(seg: Segment, number: int, rep: int, default_use: str) -> dict[str, Any] | None:
    """XTN -> ContactPoint; pre-2.5 feeds put the number in XTN.1."""
    values = seg.values(number, rep)
    if not any(values):
        return None
    equipment = _at(values, 3).upper()
    email = _at(values, 4)
    if equipment in ("INTERNET", "X.400") or (email and not _at(values, 7)):
        if not email:
            return None
        return {"system": "email", "value": email, "use": default_use}
    value = _at(values, 12)
    if not value:
        pieces = [_at(values, n) for n in (5, 6, 7)]
        value = " ".join(p for p in pieces if p)
        if pieces[0] and value:
            value = "+" + value
        extension = _at(values, 8)
        if value and extension:
            value += f" X{extension}"
    value = value or _at(values, 1)
    if not value:
        return None
    system = {"FX": "fax", "BP": "pager"}.get(equipment, "phone")
    use = {"PRN": "home", "WPN": "work", "ORN": "home", "VHN": "home", "PRS": "mobile",
           "NET": default_use}.get(_at(values, 2), default_use)
    return {"system": system, "value": value, "use": use}


def to_coding(code: str, display: str, system_name: str) -> dict[str, Any] | None:
    if not code and not display:
        return None
    coding: dict[str, Any] = {}
    system = code_system(system_name)
    if system:
        coding["system"] = system
    if code:
        coding["code"] = code
    if display:
        coding["display"] = display
    return coding


@lru_cache(maxsize=4096)
def code_system(name: str) -> str:
    name = name.strip()
    if not name:
        return ""
    if name in CODE_SYSTEMS:
        return CODE_SYSTEMS[name]
    upper = name.upper()
    if upper.startswith("HL7") and upper[3:].isdigit():
        return f"http://terminology.hl7.org/CodeSystem/v2-{upper[3:]}"
    if re.fullmatch(r"[0-2](\.\d+)+", name):
        return f"urn:oid:{name}"
    if name.startswith(("http://", "https://", "urn:")):
        return name
    return f"urn:refloop:hl7:codesystem:{_slug(name)}"


def to_codeable(seg: Segment, number: int, rep: int = 0) -> dict[str, Any] | None:
    """CWE/CE -> CodeableConcept (two triplets plus CWE.9 original text)."""
    values = seg.values(number, rep)
    if not any(values):
        return None
    codings = [c for c in (
        to_coding(_at(values, 1), _at(values, 2), _at(values, 3)),
        to_coding(_at(values, 4), _at(values, 5), _at(values, 6))) if c]
    text = _at(values, 9)
    if not codings and not text:
        return None
    concept: dict[str, Any] = {}
    if codings:
        concept["coding"] = codings
    if text:
        concept["text"] = text
    return concept


def xcn_key(seg: Segment, number: int, rep: int = 0) -> str:
    """A practitioner's business key: XCN.1 id, else the name."""
    ident = seg.get(number, 1, rep=rep)
    if ident:
        return f"id:{ident}"
    return "name:" + "^".join(seg.get(number, n, rep=rep) for n in (2, 3, 4))
