"""The ACK path: read MSH leanly, decide, store durably (one transaction per group), answer.

`assess` is pure and fast (no full parse): MSH fields, the control id, byte and length checks,
required segments and the referral identifier. `store` writes the accepted messages of a group
in ONE short transaction (`InboxWriter`: group commit, messages from several connections share
a commit) and returns each message's ACK.

One bad message never fails the others of its group: values that cannot be stored (too long
for their column, NUL bytes) are refused in `assess`, before the group; if the group's
transaction fails all the same, its messages are stored one by one, and a message that still
fails alone is kept in quarantine and answered AE (its sender must not resend it unchanged).
Only when nothing can be stored at all (the database is down) is the answer AR "resend later".

A duplicate (same sender and MSH-10) with the same bytes is ACKed again and not applied twice;
with different bytes it is a conflict (a sender whose counter was reset): kept in quarantine,
answered AE with ERR 205, and logged as a WARNING, never dropped.
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
from hl7_bridge.header import (
    EncodingCharactersError,
    Header,
    HeaderError,
    is_batch,
    parse_header,
)
from hl7_bridge.normalise import CharsetError, codec_for
from hl7_bridge.requirements import missing_referral_key
from hl7_bridge.structure import REQUIRED, SUPPORTED, SUPPORTED_VERSIONS, structure_of
from referrals.store.inbox_writer import (
    SENDER_MAX,
    InboxWriter,
    NewMessage,
    Stored,
    storage_problem,
)

log = logging.getLogger("refloop.hl7.intake")

CHANNEL = "hl7v2"
WORK_KIND = "hl7.message"
ACCEPT, REJECT, IGNORE = "accept", "reject", "ignore"
CONTENT_TYPE = "x-application/hl7-v2+er7"
#: the longest MSH-10 we take (the HL7 v2.7+ maximum length of MSH-10)
CONTROL_ID_MAX = 199
#: how much of a frame over the size limit is kept in quarantine
OVERSIZE_KEPT = 65536

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
#: codecs whose text cannot be read one byte per character, as the ACK path read MSH
WIDE_CODECS = frozenset({"utf-16", "utf-32"})
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
    #: same sender and MSH-10 as a stored message, different bytes
    conflict: bool = False
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
    writer: InboxWriter | None = None
    #: other listener processes write to the same store (SQLite: a cross-process lock)
    shared_store: bool = False

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
        except EncodingCharactersError as exc:
            return Item(raw, exc.header, exc.header.sender, REJECT, "AR",
                        (AckError(102, str(exc), "MSH", 1, 2),))
        except HeaderError as exc:
            return Item(raw, None, "unknown", REJECT, "AR",
                        (AckError(100, str(exc), "MSH", 1),))
        sender = header.sender
        item = Item(raw, header, sender, ACCEPT)
        problem = _unstorable(header, sender)
        if problem is not None:
            item.action, item.outcome, item.errors = REJECT, "AR", (problem,)
            return item
        if header.message_type == "ACK":
            item.action = IGNORE
            return item
        problem = self._refusal(header, sender, peer_cn)
        if problem is not None:
            item.action, item.outcome, item.errors = REJECT, "AR", (problem,)
            return item
        missing = self._missing_content(raw, header)
        if missing is not None and header.enhanced_mode:
            # stored (CA); the content error goes back in an application ACK (MSH-16)
            item.action, item.application_errors = REJECT, (missing,)
        elif missing is not None:
            item.action, item.outcome, item.errors = REJECT, "AE", (missing,)
        return item

    def oversize(self, head: bytes, limit: int) -> Frame:
        """A frame over `limit` bytes: its first part kept in quarantine, answered AR (CR)."""
        try:
            header: Header | None = parse_header(head)
        except EncodingCharactersError as exc:
            header = exc.header
        except HeaderError:
            header = None
        error = AckError(104, f"message larger than {limit} bytes; its first {len(head)} bytes "
                              "are kept in quarantine")
        return Frame([Item(head, header, header.sender if header else "unknown", REJECT, "AR",
                           (error,))])

    def _refusal(self, header: Header, sender: str, peer_cn: str | None) -> AckError | None:
        if not self.config.sender_allowed(sender):
            return AckError(207, f"sender {sender} is not allowed on this listener; ask the "
                            "receiving team to add it to [hl7] allow", "MSH", 1, 3)
        wanted_cn = self.config.sender(sender).certificate_cn
        if wanted_cn and peer_cn != wanted_cn:
            return AckError(207, f"sender {sender} must present its TLS client certificate",
                            "MSH", 1, 3)
        if not header.control_id.strip():
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
            codec = codec_for(header.charset, self.config.sender(sender).fallback_charset)
        except CharsetError as exc:
            return AckError(103, str(exc), "MSH", 1, 18)
        if codec in WIDE_CODECS:  # this MSH was read one byte per character
            return AckError(103, f"MSH-18 says {header.charset!r} but the message is written "
                            "one byte per character; MLLP carries single-byte encodings or "
                            "UTF-8, so send UNICODE UTF-8 (or leave MSH-18 empty)", "MSH", 1, 18)
        return None

    def _missing_content(self, raw: bytes, header: Header) -> AckError | None:
        nul = _nul_byte(raw, header)
        if nul is not None:
            return nul
        structure = structure_of(header.message_type, header.trigger_event) or ""
        required = REQUIRED.get(structure, ())
        if required:
            present = {m.decode("ascii") for m in _SEGMENT_NAMES.findall(raw)}
            for name in required:
                if name not in present:
                    return AckError(100, f"required segment {name} is missing for {structure}",
                                    name, 1)
        return missing_referral_key(raw, header, structure)

    # --- storing -----------------------------------------------------------------------------

    def store(self, frames: list[Frame]) -> list[bytes | None]:
        """Store every message of `frames` (accepted ones in one transaction); return each
        frame's response."""
        items = [item for frame in frames for item in frame.items]
        try:
            self._store_accepted([i for i in items if i.action == ACCEPT])
        finally:
            if self.writer is not None:
                self.writer.release()
        rest = [i for i in items if i.action != ACCEPT]
        if rest:
            self._store_rest(rest)
        responses: list[bytes | None] = []
        for frame in frames:
            for item in frame.items:
                item.ack = self._ack_for(item)
                self._count(item)
            responses.append(_join(frame, self.config) if frame.batch
                             else frame.items[0].ack)
        return responses

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def _inbox_writer(self) -> InboxWriter:
        if self.writer is None:
            self.writer = InboxWriter(self.inbox.db, shared=self.shared_store)
        return self.writer

    @property
    def waits_for_lock(self) -> bool:
        """True when a group commit starts by waiting for a cross-process write lock."""
        return self._inbox_writer().uses_lock

    def acquire(self) -> None:
        """Wait for the cross-process write lock before forming the next group."""
        self._inbox_writer().acquire()

    def _store_accepted(self, items: list[Item]) -> None:
        """The accepted messages of a group in one transaction (one INSERT for the messages,
        one for their work); if it fails, each message alone."""
        if not items:
            return
        writer = self._inbox_writer()
        try:
            results: list[Stored | None] = list(writer.accept_group(
                [_new_message(i) for i in items]))
        except Exception:
            log.exception("storing a group of HL7 messages failed; storing them one by one",
                          extra={"messages": len(items)})
            results = []
            for item in items:
                try:
                    results.append(writer.accept_group([_new_message(item)])[0])
                except Exception:
                    log.exception("storing an HL7 message failed", extra={
                        "sender": item.sender, "control_id": _control(item)})
                    results.append(None)
        for item, result in zip(items, results, strict=True):
            if result is None:
                # kept in quarantine if the store still works; AE, so it is not resent as is
                item.action, item.outcome = REJECT, "AE"
                item.errors = (AckError(207, "the message could not be stored as received; it "
                                             "is kept in quarantine for review"),)
                continue
            item.inbox_id, item.duplicate = result.inbox_id, result.duplicate
            if result.conflict:
                self._conflict(item, result.inbox_id)

    def _conflict(self, item: Item, first_id: int) -> None:
        assert item.header is not None
        log.warning("HL7 control id reused with different content: kept in quarantine",
                    extra={"sender": item.sender, "control_id": item.header.control_id,
                           "first_inbox_id": first_id, "alert": "hl7-control-id-conflict"})
        error = AckError(205, f"MSH-10 {item.header.control_id} was already used by this sender "
                              f"for a different message (inbox {first_id}); this message is "
                              "kept in quarantine for review, send it with a new MSH-10",
                         "MSH", 1, 10)
        item.action, item.conflict, item.duplicate = REJECT, True, False
        if item.header.enhanced_mode:
            item.application_errors = (error,)
        else:
            item.outcome, item.errors = "AE", (error,)

    def _store_rest(self, items: list[Item]) -> None:
        """Rejected, ignored and conflicting messages: one transaction, else one by one."""
        try:
            with self.write() as conn:
                for item in items:
                    self._store_one(item, conn)
            return
        except Exception:
            log.exception("keeping rejected HL7 messages failed; keeping them one by one",
                          extra={"messages": len(items)})
        for item in items:
            try:
                with self.write() as conn:
                    self._store_one(item, conn)
            except Exception:
                log.exception("keeping an HL7 message failed; answering AR", extra={
                    "sender": _clean(item.sender), "control_id": _control(item)})
                item.outcome = "AR"
                item.errors = (AckError(207, "the message could not be stored; resend it "
                                             "later"),)
                item.application_errors = ()

    def _store_one(self, item: Item, conn: Connection) -> None:
        headers = {"control_id": _control(item)} if item.header else {}
        sender = _clean(item.sender)[:SENDER_MAX]
        if item.action == IGNORE:
            accepted = self.inbox.accept(CHANNEL, sender, item.raw, work_kind=None,
                                         content_type=CONTENT_TYPE, headers=headers,
                                         status="ignored", conn=conn)
            item.inbox_id = accepted.inbox_id
        else:
            reason = _clean("; ".join(e.text for e in item.errors + item.application_errors))
            if item.conflict:
                reason = "conflict: " + reason
            item.inbox_id = self.inbox.reject(CHANNEL, sender, item.raw, reason,
                                              content_type=CONTENT_TYPE, headers=headers,
                                              conn=conn)
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
        key = "duplicate" if item.duplicate else "conflict" if item.conflict else item.outcome
        self.counters[key] = self.counters.get(key, 0) + 1


def _new_message(item: Item) -> NewMessage:
    return NewMessage(CHANNEL, item.sender, item.raw, item.dedupe_key, WORK_KIND, CONTENT_TYPE,
                      {"control_id": item.header.control_id} if item.header else {})


def _unstorable(header: Header, sender: str) -> AckError | None:
    """MSH values that cannot be stored (or keyed) as they are: refused before the group."""
    control = header.control_id
    if _CONTROL_CHARACTERS.search(control):
        return AckError(102, "MSH-10 message control id contains control characters (such as "
                        "NUL); send a printable control id", "MSH", 1, 10)
    if len(control) > CONTROL_ID_MAX:
        return AckError(104, f"MSH-10 message control id is longer than {CONTROL_ID_MAX} "
                        "characters", "MSH", 1, 10)
    for number, value in ((3, header.sending_application), (4, header.sending_facility)):
        if _CONTROL_CHARACTERS.search(value):
            return AckError(102, f"MSH-{number} contains control characters (such as NUL)",
                            "MSH", 1, number)
    if len(sender) > SENDER_MAX:
        number = 3 if len(header.sending_application) >= len(header.sending_facility) else 4
        return AckError(104, f"MSH-3 and MSH-4 together are longer than {SENDER_MAX} "
                        "characters", "MSH", 1, number)
    problem = storage_problem(sender, f"hl7|{sender}|{control}")
    if problem is not None:
        return AckError(104, problem, "MSH", 1, 10)
    return None


def _nul_byte(raw: bytes, header: Header) -> AckError | None:
    """An ERR naming the field that holds a NUL byte (never data in v2, and PostgreSQL can
    hold it neither in text nor in JSON), or None. One memchr when there is none."""
    at = raw.find(b"\x00")
    if at < 0:
        return None
    start = max(raw.rfind(b"\r", 0, at), raw.rfind(b"\n", 0, at)) + 1
    line = raw[start:at]
    name = line[:3].decode("latin-1")
    separator = header.field_separator.encode("latin-1")
    number = line.count(separator) + (1 if name == "MSH" else 0)
    earlier = raw[:start]
    sequence = 1 + sum(1 for seg in _LINE_ENDS.split(earlier) if seg[:3] == line[:3])
    return AckError(102, f"{name}-{number} contains a NUL byte, which no field may hold; send "
                    "the message without it", name, sequence, number)


def _clean(text: str) -> str:
    """Text that any store can hold (PostgreSQL text cannot hold NUL)."""
    return text.replace("\x00", "\\x00")


def _control(item: Item) -> str:
    return _clean(item.header.control_id)[:CONTROL_ID_MAX] if item.header else ""


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
