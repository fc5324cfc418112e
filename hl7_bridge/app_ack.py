"""Enhanced-mode application acknowledgements, sent later as outbound work.

In enhanced mode the commit ACK (CA) says only that the message is stored. A content error
(found on the ACK path, or when the message is mapped) is told to the sender afterwards in an
application ACK (ACK with MSA-1 AE and ERR segments) when MSH-16 asks for one (AL or ER), sent
over MLLP to the sender's configured return address (`[hl7.senders."X".outbound]`). The work
item carries everything the ACK needs (decided at commit), and its MSH-10 is derived from the
work key, so a resend reuses it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict
from typing import Any

from sqlalchemy.engine import Connection

from hl7_bridge.ack import AckError, build_ack, wants_application_ack
from hl7_bridge.config import Hl7Config
from hl7_bridge.header import Header, parse_header

log = logging.getLogger("refloop.hl7.app_ack")
WORK_KIND = "hl7.outbound"


def queue_application_ack(work: Any, conn: Connection, config: Hl7Config, header: Header,
                          code: str, errors: tuple[AckError, ...]) -> bool:
    """Enqueue the application ACK `code` (AA/AE/AR) for `header`'s message when MSH-16 asks
    for it and the sender has a return address; False when none is sent."""
    if not wants_application_ack(header, code):
        return False
    sender = header.sender
    if not config.sender(sender).outbound.enabled:
        log.warning("HL7 application ACK not sent: no return address for the sender",
                    extra={"sender": sender, "control_id": header.control_id, "ack": code})
        return False
    msh = header.field_separator.join(header.fields[0:1] + header.fields[2:])
    payload = {"kind": "app-ack", "sender": sender, "code": code, "msh": msh,
               "errors": [asdict(e) for e in errors]}
    work.enqueue(WORK_KIND, payload, key=f"hl7-appack:{sender}|{header.control_id}",
                 max_attempts=config.sender(sender).outbound.max_attempts, conn=conn)
    return True


def build_application_ack(payload: dict[str, Any], work_key: str, config: Hl7Config
                          ) -> tuple[bytes, str]:
    """The ACK bytes and our MSH-10 (stable for the work item)."""
    header = parse_header(payload["msh"].encode("latin-1"))
    control_id = "RFA" + hashlib.sha256(work_key.encode()).hexdigest()[:17]
    errors = tuple(AckError(**e) for e in payload.get("errors", []))
    message = build_ack(header, payload["code"], errors=errors,
                        application=config.application, facility=config.facility,
                        control_id=control_id, accept_ack="AL")
    return message, control_id
