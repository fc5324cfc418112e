"""The ACK path: read MSH leanly, decide, store durably (one transaction per group), answer.

`assess` is pure and fast (no full parse). `store` writes a group of assessed messages in ONE
write transaction (group commit: messages from several connections share a commit) and returns
each message's ACK; if the transaction fails, every message in it gets AR (original mode) or
CE (enhanced), so the senders resend and nothing is acknowledged that is not stored.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from hl7_bridge.ack import AckError, ack_code, build_ack, wants_accept_ack
from hl7_bridge.app_ack import queue_application_ack
from hl7_bridge.config import Hl7Config
from hl7_bridge.header import Header, HeaderError, is_batch, parse_header
from hl7_bridge.normalise import CharsetError, codec_for
from hl7_bridge.structure import REQUIRED, SUPPORTED, SUPPORTED_VERSIONS, structure_of

log = logging.getLogger("refloop.hl7.intake")

CHANNEL = "hl7v2"
WORK_KIND = "hl7.message"
ACCEPT, REJECT, IGNORE = "accept", "reject", "ignore"

_SEGMENT_NAMES = re.compile(rb"(?:^|[\r\n])([A-Z][A-Z0-9]{2})(?=[^A-Za-z0-9\r\n])")


@dataclass
class Item:
    """One message of a frame and what the ACK path decided about it."""

    raw: bytes
    header: Header | None
    sender: str
    action: str
    outcome: str = "AA"  # AA / AE / AR before mode conversion
    errors: tuple[AckError, ...] = ()
    #: enhanced mode: content errors told later in an application ACK (the commit ACK is CA)
    application_errors: tuple[AckError, ...] = ()
    ack: bytes | None = None
    duplicate: bool = False
    inbox_id: int | None = None

    @property
    def dedupe_key(self) -> str:
        control = self.header.control_id if self.header else ""
        return f"hl7|{self.sender}|{control}"


@dataclass
class Frame:
    items: list[Item]
    batch: bool = False
    batch_header: Header | None = None


@dataclass
class Intake:
    config: Hl7Config
    inbox: Any
    write: Callable[[], AbstractContextManager[Connection]]
    #: the work queue, for enhanced-mode application ACKs (None: they are not sent)
    work: Any = None
    counters: dict[str, int] = field(default_factory=dict)

    # --- pure part -------------------------------------------------------------------------

    def assess_frame(self, raw: bytes, peer_cn: str | None = None) -> Frame:
        if is_batch(raw):
            parts = list(_batch_messages(raw))
            try:
                batch_header = parse_header(parts[0]) if parts else None
            except HeaderError:
                batch_header = None
            if parts:
                return Frame([self.assess(p, peer_cn) for p in parts], True, batch_header)
        return Frame([self.assess(raw, peer_cn)])

    def assess(self, raw: bytes, peer_cn: str | None = None) -> Item:
        try:
            header = parse_header(raw)
        except HeaderError as exc:
            return Item(raw, None, "unknown", REJECT, "AR",
                        (AckError(100, str(exc), "MSH", 1),))
        sender = header.sender
        item = Item(raw, header, sender, ACCEPT)
        if header.message_type == "ACK":
            item.action = IGNORE
            return item
        problem = self._refusal(header, sender, peer_cn)
        if problem is not None:
            item.action, item.outcome, item.errors = REJECT, "AR", (problem,)
            return item
        missing = self._missing_segments(raw, header)
        if missing is not None and header.enhanced_mode:
            # stored (CA); the content error goes back in an application ACK (MSH-16)
            item.action, item.application_errors = REJECT, (missing,)
        elif missing is not None:
            item.action, item.outcome, item.errors = REJECT, "AE", (missing,)
        return item

    def _refusal(self, header: Header, sender: str, peer_cn: str | None) -> AckError | None:
        if not self.config.sender_allowed(sender):
            return AckError(207, f"sender {sender} is not allowed on this listener; ask the "
                            "receiving team to add it to [hl7] allow", "MSH", 1, 3)
        wanted_cn = self.config.sender(sender).certificate_cn
        if wanted_cn and peer_cn != wanted_cn:
            return AckError(207, f"sender {sender} must present its TLS client certificate",
                            "MSH", 1, 3)
        if not header.control_id:
            return AckError(101, "MSH-10 message control id is empty", "MSH", 1, 10)
        if header.processing_id not in self.config.processing_ids:
            return AckError(202, f"processing id {header.processing_id!r} is not accepted "
                            f"here (accepted: {', '.join(self.config.processing_ids)})",
                            "MSH", 1, 11)
        version = header.version or self.config.sender(sender).default_version
        if version not in SUPPORTED_VERSIONS:
            return AckError(203, f"version {version!r} is not supported", "MSH", 1, 12)
        events = SUPPORTED.get(header.message_type)
        if events is None:
            return AckError(200, f"message type {header.message_type!r} is not supported",
                            "MSH", 1, 9)
        if header.trigger_event not in events:
            return AckError(201, f"event {header.message_type}^{header.trigger_event} is not "
                            "supported", "MSH", 1, 9)
        try:
            codec_for(header.charset, self.config.sender(sender).fallback_charset)
        except CharsetError as exc:
            return AckError(103, str(exc), "MSH", 1, 18)
        return None

    def _missing_segments(self, raw: bytes, header: Header) -> AckError | None:
        structure = structure_of(header.message_type, header.trigger_event) or ""
        required = REQUIRED.get(structure, ())
        if not required:
            return None
        present = {m.decode("ascii") for m in _SEGMENT_NAMES.findall(raw)}
        for name in required:
            if name not in present:
                return AckError(100, f"required segment {name} is missing for {structure}",
                                name, 1)
        return None

    # --- storing -----------------------------------------------------------------------------

    def store(self, frames: list[Frame]) -> list[bytes | None]:
        """Store every message of `frames` in one transaction; return each frame's response."""
        items = [item for frame in frames for item in frame.items]
        try:
            with self.write() as conn:
                self._accept_all([i for i in items if i.action == ACCEPT], conn)
                for item in items:
                    if item.action != ACCEPT:
                        self._store_one(item, conn)
        except Exception:
            log.exception("storing HL7 messages failed; answering AR", extra={
                "messages": len(items)})
            for item in items:
                item.outcome = "AR"
                item.errors = (AckError(207, "the message could not be stored; resend it "
                                             "later"),)
                item.duplicate = False
        responses: list[bytes | None] = []
        for frame in frames:
            for item in frame.items:
                item.ack = self._ack_for(item)
                self._count(item)
            responses.append(_join(frame, self.config) if frame.batch
                             else frame.items[0].ack)
        return responses

    def _accept_all(self, items: list[Item], conn: Connection) -> None:
        """The accepted messages of a group: one INSERT for them and one for their work."""
        if not items:
            return
        accepted = self.inbox.accept_many([{
            "channel": CHANNEL, "sender": item.sender, "body": item.raw,
            "work_kind": WORK_KIND, "content_type": "x-application/hl7-v2+er7",
            "headers": {"control_id": item.header.control_id} if item.header else {},
            "dedupe_key": item.dedupe_key} for item in items], conn)
        for item, result in zip(items, accepted, strict=True):
            item.inbox_id, item.duplicate = result.inbox_id, result.duplicate

    def _store_one(self, item: Item, conn: Connection) -> None:
        headers = {"control_id": item.header.control_id} if item.header else {}
        if item.action == IGNORE:
            accepted = self.inbox.accept(CHANNEL, item.sender, item.raw, work_kind=None,
                                         content_type="x-application/hl7-v2+er7",
                                         headers=headers, status="ignored", conn=conn)
            item.inbox_id = accepted.inbox_id
        else:
            reason = "; ".join(e.text for e in item.errors + item.application_errors)
            item.inbox_id = self.inbox.reject(CHANNEL, item.sender, item.raw, reason,
                                              content_type="x-application/hl7-v2+er7",
                                              headers=headers, conn=conn)
            if item.application_errors and item.header is not None and self.work is not None:
                queue_application_ack(self.work, conn, self.config, item.header, "AE",
                                      item.application_errors)

    def _ack_for(self, item: Item) -> bytes | None:
        if item.action == IGNORE and item.outcome == "AA":
            return None  # an ACK is never acknowledged
        code = ack_code(item.header, item.outcome)
        if item.header is not None and not wants_accept_ack(item.header, code):
            return None
        return build_ack(item.header, code, errors=item.errors,
                         application=self.config.application, facility=self.config.facility)

    def _count(self, item: Item) -> None:
        key = "duplicate" if item.duplicate else item.outcome
        self.counters[key] = self.counters.get(key, 0) + 1


def _batch_messages(raw: bytes) -> Iterator[bytes]:
    """Raw bytes of each message inside an FHS/BHS batch (batch segments dropped)."""
    current: list[bytes] = []
    for line in re.split(rb"\r\n|\r|\n", raw.removeprefix(b"\xef\xbb\xbf")):
        name = line[:3]
        if name in (b"FHS", b"BHS", b"BTS", b"FTS") or not line.strip():
            continue
        if name == b"MSH" and current:
            yield b"\r".join(current) + b"\r"
            current = []
        current.append(line)
    if current:
        yield b"\r".join(current) + b"\r"


def _join(frame: Frame, config: Hl7Config) -> bytes | None:
    """A batch of ACKs (BHS ... BTS) answering a batch."""
    acks = [item.ack for item in frame.items if item.ack]
    if not acks:
        return None
    h = frame.batch_header
    f = h.field_separator if h else "|"
    msh2 = h.encoding_characters if h else "^~\\&"
    bhs = f.join(["BHS", msh2, config.application, config.facility,
                  h.field(3) if h else "", h.field(4) if h else ""])
    body = b"".join(a if a.endswith(b"\r") else a + b"\r" for a in acks)
    return bhs.encode("latin-1") + b"\r" + body + f"BTS{f}{len(acks)}\r".encode("latin-1")
