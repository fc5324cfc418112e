"""Outbound v2: RRI and SIU back to a v2 sender when its referral changes state.

A referral listener (inside the saving transaction) enqueues `hl7.outbound` work; the handler
builds the message in the partner's dialect, sends it over MLLP and checks the ACK. MSH-10 is
derived from the work item, so a resend after a crash is recognised by the partner as the same
message. Every ACKed message is logged in hl7_outbound_log.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hl7_bridge.app_ack import build_application_ack
from hl7_bridge.client import MllpClient
from hl7_bridge.config import Hl7Config
from hl7_bridge.encoding import DEFAULT, escape
from hl7_bridge.header import HeaderError, parse_header
from hl7_bridge.tables import outbound_log
from referrals.errors import PeerError
from referrals.lifecycle import Transition
from referrals.model import Referral, Stage
from referrals.store.schema import resources
from referrals.store.work import WorkItem

log = logging.getLogger("refloop.hl7.outbound")
WORK_KIND = "hl7.outbound"

#: stage reached -> (message, trigger, RF1-1 status)
STAGE_MESSAGES: dict[str, tuple[str, str, str]] = {
    "accepted": ("RRI", "I12", "A"), "declined": ("RRI", "I12", "R"),
    "cancelled": ("RRI", "I14", "R"), "scheduled": ("SIU", "S12", "A"),
    "no-show": ("SIU", "S26", "A"), "appointment-cancelled": ("SIU", "S15", "A"),
    "visit-completed": ("RRI", "I13", "A"), "loop-closed": ("RRI", "I13", "A"),
}


def sender_of(referral: Referral) -> str | None:
    if not referral.source_key.startswith("hl7|"):
        return None
    return referral.source_key.split("|", 2)[1]


def placer_key(referral: Referral) -> str:
    return referral.source_key.split("|", 2)[2]


class Outbound:
    def __init__(self, services: Any, config: Hl7Config) -> None:
        self.services = services
        self.config = config

    # --- deciding (inside the referral's transaction) ---------------------------------------

    def on_transition(self, conn: Connection, change: Transition) -> None:
        referral, event = change.referral, change.event
        sender = sender_of(referral)
        if sender is None or event.source == f"hl7:{sender}":
            return  # not a v2 referral, or the change came from that sender itself
        partner = self.config.sender(sender).outbound
        stage = referral.stage.value
        moved = event.from_stage != event.to_stage or event.action == "schedule"
        if not partner.enabled or not moved or stage not in partner.events or \
                stage not in STAGE_MESSAGES:
            return
        payload = {"referral_id": referral.id, "sender": sender, "stage": stage,
                   "rescheduled": event.from_stage == Stage.SCHEDULED, "seq": event.seq}
        if STAGE_MESSAGES[stage][0] == "SIU":
            # decided at commit: the appointment as it is now, not as it is when we send
            payload["appointment"] = self._appointment(referral, conn)
        self.services.work.enqueue(WORK_KIND, payload, key=f"hl7-out:{referral.id}:{event.seq}",
                                   max_attempts=partner.max_attempts, conn=conn)

    def queue_status_reply(self, conn: Connection, referral: Referral, sender: str,
                           control_id: str) -> bool:
        """REF^I15: answer with RRI^I15 carrying the current status (when outbound is set)."""
        if not self.config.sender(sender).outbound.enabled:
            return False
        payload = {"referral_id": referral.id, "sender": sender, "stage": "status",
                   "reply_to": control_id}
        self.services.work.enqueue(WORK_KIND, payload,
                                   key=f"hl7-out:{referral.id}:i15:{control_id}", conn=conn)
        return True

    # --- sending (the work handler) -----------------------------------------------------------

    def handle(self, item: WorkItem) -> None:
        key = item.idempotency_key
        with self.services.db.read() as conn:
            if conn.execute(sa.select(outbound_log.c.id)
                            .where(outbound_log.c.work_key == key)).first():
                return
        payload = item.payload
        if payload.get("kind") == "app-ack":
            self._send_application_ack(item)
            return
        referral = self.services.store.get(payload["referral_id"])
        partner = self.config.sender(payload["sender"]).outbound
        if not partner.enabled:
            return
        control_id = "RFO" + hashlib.sha256(key.encode()).hexdigest()[:17]
        message, kind = self.build(referral, payload, control_id)
        with MllpClient(partner.host, partner.port, partner.timeout_seconds) as client:
            answer = client.send(message)
        code = _check_ack(answer, control_id, f"{kind} for referral {referral.id}")
        self._log_sent(key, referral.id, payload["sender"], kind, control_id, code)

    def _send_application_ack(self, item: WorkItem) -> None:
        payload = item.payload
        partner = self.config.sender(payload["sender"]).outbound
        if not partner.enabled:
            return
        message, control_id = build_application_ack(payload, item.idempotency_key,
                                                    self.config)
        with MllpClient(partner.host, partner.port, partner.timeout_seconds) as client:
            answer = client.send(message)
        code = _check_ack(answer, control_id, f"application ACK {payload['code']}")
        self._log_sent(item.idempotency_key, "", payload["sender"],
                       f"ACK^{payload['code']}", control_id, code)

    def _log_sent(self, key: str, referral_id: str, sender: str, kind: str, control_id: str,
                  code: str) -> None:
        with self.services.db.write() as conn:
            conn.execute(outbound_log.insert().values(
                work_key=key, referral_id=referral_id, sender=sender, message_type=kind,
                control_id=control_id, ack_code=code, sent_at=datetime.now(UTC)))
        log.info("HL7 outbound sent", extra={"referral_id": referral_id, "type": kind,
                                             "control_id": control_id, "ack": code})

    def build(self, referral: Referral, payload: dict[str, Any], control_id: str
              ) -> tuple[bytes, str]:
        sender = payload["sender"]
        stage = payload["stage"]
        if stage == "status":
            kind, trigger, status = "RRI", "I15", _rf1_status(referral)
        else:
            kind, trigger, status = STAGE_MESSAGES[stage]
        appointment = payload.get("appointment") if kind == "SIU" else None
        if kind == "SIU" and appointment is None:
            kind, trigger = "RRI", "I13"  # scheduled elsewhere: tell the status instead
        if kind == "SIU" and trigger == "S12" and payload.get("rescheduled"):
            trigger = "S13"
        reply_to = payload.get("reply_to") or (self._original_control_id(referral)
                                                if kind == "RRI" else "")
        segments = [self._msh(sender, kind, trigger, control_id)]
        if kind == "RRI":
            if reply_to:
                segments.append(f"MSA|AA|{reply_to}")
            segments.append(self._rf1(referral, status))
            # the provider contact RRI requires: the referral's recipient, for whom we answer
            segments.append(f"PRD|RT^Referred to provider^HL70286|"
                            f"{escape(self.config.facility, DEFAULT)}")
        else:
            assert appointment is not None
            segments.append(self._sch(referral, appointment, stage))
        segments.extend(self._pid(referral))
        if kind == "SIU":  # the resources group: the service booked
            segments += ["RGS|1", f"AIS|1||^{escape(referral.specialty or 'Referral', DEFAULT)}"]
        segments.append(f"NTE|1||{escape('Referral ' + referral.stage.value, DEFAULT)}")
        return ("\r".join(segments) + "\r").encode("utf-8"), f"{kind}^{trigger}"

    def _msh(self, sender: str, kind: str, trigger: str, control_id: str) -> str:
        app, _, facility = sender.partition("^")
        version = self.config.sender(sender).default_version
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")
        structure = "RRI_I12" if kind == "RRI" else "SIU_S12"
        return "|".join(["MSH", "^~\\&", escape(self.config.application, DEFAULT),
                         escape(self.config.facility, DEFAULT), escape(app, DEFAULT),
                         escape(facility, DEFAULT), stamp, "",
                         f"{kind}^{trigger}^{structure}", control_id, "P", version,
                         "", "", "AL", "NE", "", "UNICODE UTF-8"])

    def _rf1(self, referral: Referral, status: str) -> str:
        placer = escape(placer_key(referral).split("^")[0], DEFAULT)
        namespace = escape(placer_key(referral).partition("^")[2], DEFAULT)
        priority = {"stat": "S", "asap": "A", "urgent": "A"}.get(referral.priority, "R")
        return "|".join(["RF1", status, priority, "", "", "", f"{placer}^{namespace}",
                         "", "", datetime.now(UTC).strftime("%Y%m%d"), "",
                         f"{referral.id}^{escape(self.config.facility, DEFAULT)}"])

    def _sch(self, referral: Referral, appointment: dict[str, Any], stage: str) -> str:
        number, _, namespace = placer_key(referral).partition("^")
        placer = f"{escape(number, DEFAULT)}^{escape(namespace, DEFAULT)}"  # EI components
        start = _v2_time(appointment.get("start", ""))
        end = _v2_time(appointment.get("end", ""))
        status = {"booked": "Booked", "noshow": "Noshow", "cancelled": "Cancelled",
                  "fulfilled": "Complete", "entered-in-error": "Deleted"}.get(
            appointment.get("status", ""), "Booked")
        status = {"no-show": "Noshow", "appointment-cancelled": "Cancelled"}.get(stage, status)
        ours = escape(self.config.facility, DEFAULT)
        fields = ["SCH", "", f"{appointment['id']}^{ours}", "", "", "",
                  f"^{escape('Referral ' + stage, DEFAULT)}", "", "", "", "",
                  f"^^^{start}^{end}", "", "", "", "", f"^{ours}", "", "", "", "^Refloop",
                  "", "", "", "", status, placer]
        return "|".join(fields)

    def _pid(self, referral: Referral) -> list[str]:
        patient_id = referral.patient.removeprefix("Patient/")
        server = f"hl7:{sender_of(referral)}"
        patient = self.services.resources.try_get("Patient", patient_id, server=server) or {}
        ids = "~".join(f"{escape(i['value'], DEFAULT)}^^^&{escape(_oid(i['system']), DEFAULT)}"
                       f"&ISO" if _oid(i["system"]) else escape(i["value"], DEFAULT)
                       for i in patient.get("identifier", []))
        name = (patient.get("name") or [{}])[0]
        xpn = f"{escape(name.get('family', ''), DEFAULT)}^" \
              f"{escape(' '.join(name.get('given', [])), DEFAULT)}"
        if not ids:
            return []
        return [f"PID|1||{ids}||{xpn}||{patient.get('birthDate', '').replace('-', '')}"]

    def _appointment(self, referral: Referral, conn: Connection) -> dict[str, Any] | None:
        """id, start, end and status of the referral's latest appointment (SCH needs no more)."""
        links = [o for o in referral.outputs if o.is_a("Appointment")]
        if not links:
            return None
        appointment_id = links[-1].reference.removeprefix("Appointment/")
        body = conn.execute(sa.select(resources.c.body).where(
            resources.c.resource_type == "Appointment",
            resources.c.resource_id == appointment_id,
            resources.c.deleted.is_(False))).scalar()
        if not isinstance(body, dict):
            return None
        return {"id": appointment_id, "start": body.get("start", ""),
                "end": body.get("end", ""), "status": body.get("status", "")}

    def _original_control_id(self, referral: Referral) -> str:
        events = self.services.store.events(referral.id)
        return events[0].source_message if events else ""


def _rf1_status(referral: Referral) -> str:
    if referral.stage in (Stage.DECLINED, Stage.CANCELLED, Stage.FAILED):
        return "R"
    if referral.stage in (Stage.DETECTED, Stage.TRIAGE, Stage.ON_HOLD):
        return "P"
    return "A"


def _oid(system: str) -> str:
    return system.removeprefix("urn:oid:") if system.startswith("urn:oid:") else ""


def _v2_time(moment: str) -> str:
    if not moment:
        return ""
    try:
        parsed = datetime.fromisoformat(moment)
    except ValueError:
        return ""
    return parsed.strftime("%Y%m%d%H%M%S%z")


def _check_ack(answer: bytes, control_id: str, what: str) -> str:
    """The partner's MSA-1 when it accepted `control_id`; PeerError (retried) otherwise."""
    code, acked_id = _ack_code(answer)
    if code not in ("AA", "CA"):
        raise PeerError(f"{what} answered {code or 'no MSA'}; retrying with backoff "
                        "(same MSH-10)")
    if acked_id != control_id:
        raise PeerError(f"{what}: the ACK's MSA-2 {acked_id!r} does not echo our MSH-10 "
                        f"{control_id!r}")
    return code


def _ack_code(answer: bytes) -> tuple[str, str]:
    """MSA-1 (upper case) and MSA-2 of an ACK; ("", "") when it has no readable MSA."""
    try:
        header = parse_header(answer)
    except HeaderError:
        return "", ""
    separator = header.field_separator
    for line in answer.replace(b"\n", b"\r").split(b"\r"):
        if line.startswith(b"MSA"):
            parts = [*line.decode("latin-1").split(separator), "", ""]
            return parts[1].strip().upper(), parts[2].strip()
    return "", ""
