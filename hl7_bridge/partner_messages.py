"""Messages other adapters ask us to send to a named v2 partner (`hl7.partner-message` work):
REF^I15 (a status request: where is the consult note?), RRI^I12 (a milestone update to a
referring practice) and MDM^T02 (the consult note itself). Any referral, whatever its source.

The partner is an `[hl7.senders."APP^FACILITY"]` entry with an `outbound` address. MSH-10 is
derived from the work item, so a resend after a crash is the same message to the partner; an
ACKed message is logged in hl7_outbound_log and never sent again. The referral is named in our
own namespace (`<referral id>^<[hl7] application>`: RF1-6, TXA-14), and that key is indexed, so a
note the partner sends back naming it (TXA-14) finds the referral. When the payload names
`on_ack`, one work item of that kind reports the partner's acceptance in the same transaction as
the log row.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hl7_bridge import index
from hl7_bridge.client import MllpClient
from hl7_bridge.config import Hl7Config
from hl7_bridge.encoding import DEFAULT, escape
from hl7_bridge.outbound import _check_ack
from hl7_bridge.tables import outbound_log
from referrals.errors import InboundError, PeerError
from referrals.model import Referral, source_server
from referrals.store.work import WorkItem

WORK_KIND = "hl7.partner-message"
MESSAGES = ("REF^I15", "RRI^I12", "MDM^T02")
#: RRI RF1-1 referral status (HL7 table 0283): accepted, pending, rejected, expired
STATUSES = ("A", "P", "R", "E")
#: the largest document we put in one OBX (base64 text), 16 MiB
MAX_DOCUMENT = 16 * 1024 * 1024

log = logging.getLogger("refloop.hl7.partner")


class PartnerMessages:
    def __init__(self, services: Any, config: Hl7Config) -> None:
        self.services = services
        self.config = config

    def handle(self, item: WorkItem) -> None:
        payload = item.payload
        key = item.idempotency_key
        message = str(payload.get("message") or "")
        partner = str(payload.get("partner") or "")
        if message not in MESSAGES:
            raise InboundError(f"hl7.partner-message: message {message!r} is not one of "
                               f"{', '.join(MESSAGES)}", expression="message")
        with self.services.db.read() as conn:
            if conn.execute(sa.select(outbound_log.c.id)
                            .where(outbound_log.c.work_key == key)).first():
                return
        outbound = self.config.sender(partner).outbound
        if not partner or not outbound.enabled:
            raise PeerError(f"no outbound address for v2 partner {partner!r}: set "
                            f'[hl7.senders."{partner}".outbound] host and port', retryable=False)
        referral = self.services.store.get(str(payload["referral_id"]))
        control_id = "RFP" + hashlib.sha256(key.encode()).hexdigest()[:17]
        raw = self.build(referral, payload, partner, control_id)
        with MllpClient(outbound.host, outbound.port, outbound.timeout_seconds) as client:
            answer = client.send(raw)
        code = _check_ack(answer, control_id, f"{message} for referral {referral.id}")
        with self.services.db.write() as conn:
            self._log_sent(conn, key, referral, partner, message, control_id, code)
            self._index(conn, referral, partner)
            if payload.get("on_ack"):
                self.services.work.enqueue(str(payload["on_ack"]), {
                    "key": key, "ack": code, "control_id": control_id, "message": message,
                    "partner": partner, "referral_id": referral.id,
                    "at": datetime.now(UTC).isoformat(),
                    "context": dict(payload.get("context") or {})},
                    key=f"{payload['on_ack']}:{key}", conn=conn)
        log.info("HL7 partner message sent", extra={"referral_id": referral.id,
                                                    "type": message, "control_id": control_id,
                                                    "ack": code})

    # -- building ---------------------------------------------------------------------------

    def build(self, referral: Referral, payload: dict[str, Any], partner: str,
              control_id: str) -> bytes:
        message = str(payload["message"])
        kind, trigger = message.split("^")
        structure = {"REF": "REF_I12", "RRI": "RRI_I12", "MDM": "MDM_T02"}[kind]
        segments = [self._msh(partner, kind, trigger, structure, control_id)]
        text = str(payload.get("text") or "")
        if kind == "MDM":
            document = payload.get("document")
            if not isinstance(document, dict):
                raise InboundError("hl7.partner-message: MDM^T02 needs a document",
                                   expression="document")
            segments.append(f"EVN|T02|{_stamp(datetime.now(UTC))}")
            segments.extend(self._pid(referral))
            segments.append("PV1|1|O")
            segments.append(self._txa(referral, document))
            segments.extend(_obx(document, text))
        else:
            status = str(payload.get("status") or ("P" if kind == "REF" else "A"))
            if status not in STATUSES:
                raise InboundError(f"hl7.partner-message: status {status!r} is not one of "
                                   f"{', '.join(STATUSES)}", expression="status")
            segments.append(self._rf1(referral, status))
            segments.append("PRD|RP")
            segments.extend(self._pid(referral))
            if text:
                segments.append(f"NTE|1||{escape(_one_line(text), DEFAULT)}")
        return ("\r".join(segments) + "\r").encode("utf-8")

    def _msh(self, partner: str, kind: str, trigger: str, structure: str,
             control_id: str) -> str:
        app, _, facility = partner.partition("^")
        version = self.config.sender(partner).default_version
        return "|".join(["MSH", "^~\\&", escape(self.config.application, DEFAULT),
                         escape(self.config.facility, DEFAULT), escape(app, DEFAULT),
                         escape(facility, DEFAULT), _stamp(datetime.now(UTC)), "",
                         f"{kind}^{trigger}^{structure}", control_id, "P", version,
                         "", "", "AL", "NE", "", "UNICODE UTF-8"])

    def _own_key(self, referral: Referral) -> str:
        return f"{escape(referral.id, DEFAULT)}^{escape(self.config.application, DEFAULT)}"

    def _rf1(self, referral: Referral, status: str) -> str:
        priority = {"stat": "S", "asap": "A", "urgent": "A"}.get(referral.priority, "R")
        return "|".join(["RF1", status, priority, "", "", "", self._own_key(referral), "", "",
                         datetime.now(UTC).strftime("%Y%m%d")])

    def _txa(self, referral: Referral, document: dict[str, Any]) -> str:
        """TXA-2 is a bare HL7 table 0270 code in v2.5.1 (IS): CN, a consultation; the
        document's LOINC type goes in OBX-3."""
        when = _v2_time(str(document.get("date") or "")) or _stamp(datetime.now(UTC))
        unique = escape(str(document.get("id") or referral.id)[:120], DEFAULT)
        fields = ["TXA", "1", "CN", "AP", when, "", "", "", "", "", "",
                  "", unique, "", self._own_key(referral), "", "", "AU"]
        return "|".join(fields)

    def _pid(self, referral: Referral) -> list[str]:
        patient_id = referral.patient.removeprefix("Patient/")
        patient = self.services.resources.try_get(
            "Patient", patient_id, server=source_server(referral.source_key)) or {}
        ids = [f"{escape(str(i.get('value', '')), DEFAULT)}^^^"
               f"{escape(_authority(str(i.get('system', ''))), DEFAULT)}"
               for i in patient.get("identifier", []) if i.get("value")]
        ids = ids or [f"{escape(patient_id, DEFAULT)}^^^{escape(self.config.facility, DEFAULT)}"]
        name = (patient.get("name") or [{}])[0]
        xpn = f"{escape(name.get('family', ''), DEFAULT)}^" \
              f"{escape(' '.join(name.get('given', [])), DEFAULT)}"
        born = str(patient.get("birthDate", "")).replace("-", "")
        return [f"PID|1||{'~'.join(ids)}||{xpn}||{born}"]

    # -- recording --------------------------------------------------------------------------

    def _log_sent(self, conn: Connection, key: str, referral: Referral, partner: str,
                  message: str, control_id: str, code: str) -> None:
        conn.execute(outbound_log.insert().values(
            work_key=key, referral_id=referral.id, sender=partner, message_type=message,
            control_id=control_id, ack_code=code, sent_at=datetime.now(UTC)))

    def _index(self, conn: Connection, referral: Referral, partner: str) -> None:
        """Our key for the referral, so the partner's answer naming it finds it."""
        index.add_referral_key(conn, f"{referral.id}^{self.config.application}", referral.id,
                               partner, referral.patient)


def _obx(document: dict[str, Any], text: str) -> list[str]:
    """The document as one ED OBX (base64) or, for plain text, TX lines."""
    content_type = str(document.get("content_type") or "application/pdf").lower()
    data = str(document.get("data_b64") or "")
    if len(data) > MAX_DOCUMENT:
        raise InboundError("hl7.partner-message: the document is larger than 16 MiB",
                           expression="document.data_b64")
    try:
        raw = base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise InboundError("hl7.partner-message: document.data_b64 is not base64",
                           expression="document.data_b64") from exc
    code = (f"{escape(str(document.get('type_code') or '11488-4'), DEFAULT)}^"
            f"{escape(str(document.get('type_display') or 'Consult note'), DEFAULT)}^LN")
    if content_type.startswith("text/"):
        lines = raw.decode("utf-8", "replace").splitlines() or [text]
        return [f"OBX|{n}|TX|{code}||{escape(line, DEFAULT)}||||||F"
                for n, line in enumerate(lines, start=1)]
    main, _, sub = content_type.partition("/")
    media = {"application": "AP", "image": "IM", "text": "TEXT"}.get(main, "AP")
    return [f"OBX|1|ED|{code}||^{media}^{escape(sub.split(';')[0].upper(), DEFAULT)}"
            f"^Base64^{data}||||||F"]


def _one_line(text: str) -> str:
    return " ".join(text.split())[:2000]


def _authority(system: str) -> str:
    if system.startswith("urn:oid:"):
        return f"&{system.removeprefix('urn:oid:')}&ISO"
    return system.rsplit("/", 1)[-1][:20] if system else ""


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S+0000")


def _v2_time(value: str) -> str:
    if not value:
        return ""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return ""
    return parsed.strftime("%Y%m%d%H%M%S%z") if parsed.tzinfo else parsed.strftime(
        "%Y%m%d%H%M%S")
