"""Outbound SRM^S01 (request a new appointment) to a scheduling system that books by v2.

Work of kind `hl7.srm` (enqueued by the scheduling adapter when a patient sends preferred days
and times) is built here and sent over MLLP to the partner's `outbound` address; the ACK is
checked and the message logged in hl7_outbound_log, so it is sent once. The placer order number
(ARQ-24, `<referral id>^<our facility>`) is recorded as a business key of the referral first,
so the partner's SIU^S12 answer (SCH-26 the same number) finds the referral through the usual
inbound path, which books it.

Payload: {"referral_id", "partner", "request_id", "patient", "patient_name", "birth_date",
"service_request", "specialty", "preferences": {"days", "times", "earliest"}, "time_zone"}.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from hl7_bridge import index
from hl7_bridge.client import MllpClient
from hl7_bridge.config import Hl7Config
from hl7_bridge.encoding import DEFAULT, escape
from hl7_bridge.outbound import _check_ack
from hl7_bridge.tables import outbound_log
from referrals.errors import PeerError
from referrals.store.work import WorkItem

log = logging.getLogger("refloop.hl7.srm")
WORK_KIND = "hl7.srm"

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: preferred part of the day -> (PREFSTART, PREFEND), HL7 table 0294
TIMES = {"morning": ("0800", "1200"), "afternoon": ("1200", "1700")}


def placer_key(referral_id: str, facility: str) -> str:
    """The referral's placer order number as the bridge keys business identifiers."""
    return f"{referral_id}^{facility}"


def build_srm(payload: dict[str, Any], control_id: str, config: Hl7Config,
              now: datetime | None = None) -> bytes:
    """SRM^S01 (v2.5.1): MSH, ARQ, APR, PID, RGS, AIS, NTE."""
    partner = str(payload["partner"])
    app, _, facility = partner.partition("^")
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S+0000")
    ours = escape(config.facility, DEFAULT)
    specialty = escape(str(payload.get("specialty") or ""), DEFAULT)
    preferences = payload.get("preferences") or {}
    earliest = str(preferences.get("earliest") or "").replace("-", "")
    segments = [
        "|".join(["MSH", "^~\\&", escape(config.application, DEFAULT), ours,
                  escape(app, DEFAULT), escape(facility, DEFAULT), stamp, "", "SRM^S01^SRM_S01",
                  control_id, "P", "2.5.1", "", "", "AL", "NE", "", "UNICODE UTF-8"]),
        "|".join(["ARQ", f"{escape(str(payload['request_id']), DEFAULT)}^{ours}", "", "", "",
                  "", "", f"^{specialty}", "ROUTINE^Routine^HL70276", "", "",
                  f"{earliest}^" if earliest else "", "", "", "", f"^{ours}", "", "", "",
                  "^Refloop", "", "", "", "",
                  f"{escape(str(payload['referral_id']), DEFAULT)}^{ours}"]),
        "|".join(["APR", _time_selection(preferences)]),
        _pid(payload),
        "RGS|1|A",
        f"AIS|1|A|^{specialty}",
        "NTE|1||" + escape("Requested by the patient through the Refloop booking link",
                           DEFAULT),
    ]
    return ("\r".join(segments) + "\r").encode("utf-8")


def _time_selection(preferences: dict[str, Any]) -> str:
    """APR-1: each day OK or NO, then the earliest start and latest end of the times chosen."""
    days = set(preferences.get("days") or [])
    parts = [f"{day.upper()}^{'OK' if day in days else 'NO'}" for day in DAYS]
    chosen = [TIMES[t] for t in preferences.get("times") or [] if t in TIMES]
    if chosen:
        parts += [f"PREFSTART^{min(s for s, _ in chosen)}", f"PREFEND^{max(e for _, e in chosen)}"]
    return "~".join(parts)


def _pid(payload: dict[str, Any]) -> str:
    patient_id = str(payload.get("patient") or "").rsplit("/", 1)[-1]
    given, _, family = str(payload.get("patient_name") or "").rpartition(" ")
    born = str(payload.get("birth_date") or "").replace("-", "")
    return "|".join(["PID", "1", "", f"{escape(patient_id, DEFAULT)}^^^REFLOOP^PI", "",
                     f"{escape(family, DEFAULT)}^{escape(given, DEFAULT)}", "", born])


class SrmSender:
    def __init__(self, services: Any, config: Hl7Config) -> None:
        self.services = services
        self.config = config

    def handle(self, item: WorkItem) -> None:
        key = item.idempotency_key
        with self.services.db.read() as conn:
            if conn.execute(sa.select(outbound_log.c.id)
                            .where(outbound_log.c.work_key == key)).first():
                return
        payload = item.payload
        partner = self.config.sender(str(payload["partner"])).outbound
        if not partner.enabled:
            raise PeerError(f"[hl7.senders.\"{payload['partner']}\".outbound] has no host and "
                            "port: the scheduling request cannot be sent", retryable=False)
        referral_id = str(payload["referral_id"])
        with self.services.db.write() as conn:
            index.add_referral_key(conn, placer_key(referral_id, self.config.facility),
                                   referral_id, str(payload["partner"]),
                                   str(payload.get("patient") or ""))
        control_id = "RFQ" + hashlib.sha256(key.encode()).hexdigest()[:17]
        message = build_srm(payload, control_id, self.config)
        with MllpClient(partner.host, partner.port, partner.timeout_seconds) as client:
            answer = client.send(message)
        code = _check_ack(answer, control_id, f"SRM^S01 for referral {referral_id}")
        with self.services.db.write() as conn:
            conn.execute(outbound_log.insert().values(
                work_key=key, referral_id=referral_id, sender=str(payload["partner"]),
                message_type="SRM^S01", control_id=control_id, ack_code=code,
                sent_at=datetime.now(UTC)))
        log.info("HL7 SRM sent", extra={"referral_id": referral_id, "control_id": control_id,
                                        "ack": code})
