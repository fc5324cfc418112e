"""MDM (TXA + OBX) and document-like ORU (OBR + OBX) -> DocumentReference (IG TXA/OBX maps).

ED (base64, e.g. a PDF) becomes an attachment with its data; TX/FT/ST lines become one
text/plain attachment; RP becomes an attachment URL.
"""

from __future__ import annotations

import base64
from typing import Any

from hl7_bridge.config import SenderConfig
from hl7_bridge.datatypes import stable_id, to_codeable, to_datetime
from hl7_bridge.keys import application_namespaces, entity_keys, first_keys
from hl7_bridge.maps.practitioner import from_xcn
from hl7_bridge.message import Message, Segment

TEXT_TYPES = frozenset({"TX", "FT", "ST", "CF"})
DOC_STATUS = {"AU": "final", "LA": "final", "DI": "preliminary", "DO": "preliminary",
              "IN": "preliminary", "IP": "preliminary", "PA": "preliminary",
              "CA": "entered-in-error"}
MEDIA = {"AP": "application", "IM": "image", "TEXT": "text", "AU": "audio", "VI": "video",
         "MU": "multipart", "NS": "application", "SD": "application", "SI": "application"}


def document_like(msg: Message) -> bool:
    return any(o.get(2).upper() in TEXT_TYPES | {"ED", "RP"} for o in msg.all("OBX"))


def document_order_keys(msg: Message) -> list[str]:
    """The keys of the referral a note answers: TXA-14 placer order, else ORC-2 / OBR-2."""
    app = application_namespaces(msg)
    return first_keys(entity_keys(msg.first("TXA"), 14, app),
                      entity_keys(msg.first("ORC"), 2, app),
                      entity_keys(msg.first("OBR"), 2, app))


def to_document_reference(msg: Message, sender: str, config: SenderConfig,
                          patient: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    txa, obr = msg.first("TXA"), msg.first("OBR")
    unique = (txa.get(12) if txa is not None else "") or msg.control_id
    document: dict[str, Any] = {"resourceType": "DocumentReference",
                                "id": stable_id("DocumentReference", sender, unique),
                                "status": "current"}
    practitioners: list[dict[str, Any]] = []
    if txa is not None:
        _from_txa(document, txa, msg, sender, config, practitioners)
    elif obr is not None:
        kind = to_codeable(obr, 4)
        if kind:
            document["type"] = kind
        date = to_datetime(obr.get(7) or obr.get(22), config.time_zone)
        if date:
            document["date"] = _instant(date)
    if patient:
        document["subject"] = {"reference": patient}
    document["content"] = _content(msg.all("OBX"))
    return document, practitioners


def _from_txa(document: dict[str, Any], txa: Segment, msg: Message, sender: str,
              config: SenderConfig, practitioners: list[dict[str, Any]]) -> None:
    if txa.get(12):
        document["masterIdentifier"] = {"value": txa.get(12)}
    kind = to_codeable(txa, 2)
    if kind:
        document["type"] = kind
    date = to_datetime(txa.get(6) or txa.get(4), config.time_zone)
    if date:
        document["date"] = _instant(date)
    status = DOC_STATUS.get(txa.get(17).upper())
    if status:
        document["docStatus"] = status
    if msg.trigger_event == "T11":
        document["status"] = "entered-in-error"
    author = from_xcn(txa, 9, sender, config) or from_xcn(txa, 5, sender, config)
    if author is not None:
        practitioners.append(author)
        document["author"] = [{"reference": f"Practitioner/{author['id']}"}]
    if msg.trigger_event in ("T10", "T06") and txa.get(13):
        parent = stable_id("DocumentReference", sender, txa.get(13))
        code = "replaces" if msg.trigger_event == "T10" else "appends"
        document["relatesTo"] = [{"code": code,
                                  "target": {"reference": f"DocumentReference/{parent}"}}]


def _content(observations: list[Segment]) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    lines: list[str] = []
    for obx in observations:
        kind = obx.get(2).upper()
        for rep in range(max(1, len(obx.repetitions(5)))):
            if kind == "ED":
                content.append({"attachment": _ed(obx, rep)})
            elif kind == "RP":
                url = obx.get(5, 1, rep=rep)
                if url:
                    content.append({"attachment": {"url": url}})
            elif kind in TEXT_TYPES:
                lines.append(obx.whole(5, rep))
    if lines:
        text = "\n".join(lines)
        content.insert(0, {"attachment": {
            "contentType": "text/plain; charset=utf-8",
            "data": base64.b64encode(text.encode("utf-8")).decode("ascii")}})
    return content or [{"attachment": {"contentType": "text/plain"}}]


def _ed(obx: Segment, rep: int) -> dict[str, Any]:
    """ED: source ^ type of data ^ data subtype ^ encoding ^ data."""
    media = obx.get(5, 2, rep=rep)
    subtype = obx.get(5, 3, rep=rep).lower()
    main = MEDIA.get(media.upper(), media.lower() or "application")
    attachment: dict[str, Any] = {"contentType": f"{main}/{subtype or 'octet-stream'}"}
    data = obx.components(5, rep)[4] if len(obx.components(5, rep)) > 4 else ""
    encoding = obx.get(5, 4, rep=rep).upper()
    if data:
        if encoding in ("BASE64", "B64"):
            attachment["data"] = "".join(data.split())
        else:
            text = obx.text(data)
            attachment["data"] = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return attachment


def _instant(moment: str) -> str:
    """DocumentReference.date is an instant: a date alone gets midnight UTC."""
    if "T" in moment:
        return moment
    padded = (moment + "-01-01")[:10] if len(moment) < 10 else moment
    return f"{padded}T00:00:00+00:00"
