"""What applying a message reads of it, taken when the message is parsed and mapped.

Applying a message (effects.py) reads few things of the message itself: MSH-10, the event,
the message type and charset, whether it carries IN1, and the v2 state (merge.py) that its
patient and its main resource start with when neither has one stored yet. They are taken
once, beside the mapping (in the mapping process, mapper.py, when it runs one), so the writer
parses a message again only to merge it with a stored state.
"""

from __future__ import annotations

from dataclasses import dataclass

from hl7_bridge import merge
from hl7_bridge.maps import Mapped
from hl7_bridge.message import Message, Segment

#: the v2 state each kind of main resource keeps (merge.py)
MAIN_STATE = {"referral": merge.REFERRAL, "order": merge.ORDER,
              "appointment": merge.APPOINTMENT}


@dataclass
class Facts:
    control_id: str
    trigger_event: str
    message_type: str
    charset: str
    has_in1: bool
    #: the v2 state of the message's patient, and of its main resource, with none stored
    patient_lines: list[str]
    main_lines: list[str]
    #: OMG/ORM: the positions of the order's ORC and OBR among the message's segments
    order_group_at: list[int | None]


def patient_names(message_type: str) -> tuple[str, ...]:
    """The segments a patient's state keeps: an ADT's insurance belongs to the patient."""
    return merge.PATIENT_WITH_INSURANCE if message_type == "ADT" else merge.PATIENT


def main_segments(msg: Message, kind: str,
                  order_group: tuple[Segment | None, Segment | None]) -> list[Segment]:
    """The message's segments that the main resource's state covers."""
    if kind == "order":
        group = [s for s in order_group if s is not None]
        return group + [s for s in msg if s.name in ("TQ1", "IN1", "IN2")]
    names = MAIN_STATE.get(kind, ())
    return [s for s in msg if s.name in names]


def facts_of(msg: Message, mapped: Mapped) -> Facts:
    message_type, charset = msg.message_type, msg.charset
    patient = merge.merge(None, msg.all("PID"), patient_names(message_type), charset) \
        if mapped.patient is not None else []
    main = merge.merge(None, main_segments(msg, mapped.kind, mapped.order_group),
                       MAIN_STATE.get(mapped.kind, ()), charset) \
        if mapped.kind in MAIN_STATE else []
    return Facts(msg.control_id, msg.trigger_event, message_type, charset, bool(msg.all("IN1")),
                 patient, main, [_position(msg, s) for s in mapped.order_group])


def order_group(msg: Message, at: list[int | None]) -> tuple[Segment | None, Segment | None]:
    """The order's ORC and OBR again, from their positions (a mapping read back from JSON)."""
    orc, obr = (None if i is None else msg.segments[i] for i in at)
    return orc, obr


def _position(msg: Message, segment: Segment | None) -> int | None:
    if segment is None:
        return None
    return next(i for i, s in enumerate(msg.segments) if s is segment)
