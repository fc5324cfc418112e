"""ACK messages: original (AA/AE/AR) or enhanced accept (CA/CE/CR) mode, with ERR segments;
enhanced-mode application ACKs (AA/AE/AR sent later as outbound work) reuse `build_ack`.

MSA-2 echoes MSH-10 exactly; MSH-3/4 and 5/6 are swapped; MSH-11/12 and the encoding characters
are echoed; MSA-3 carries the error text too for legacy senders that only display it. The ACK is
encoded as ISO-8859-1 text built from the latin-1 reading of MSH, so echoed bytes are unchanged.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from hl7_bridge.encoding import Delimiters, escape
from hl7_bridge.header import Header

#: HL7 table 0357, the codes we send.
ERROR_NAMES = {
    0: "Message accepted", 100: "Segment sequence error", 101: "Required field missing",
    102: "Data type error", 103: "Table value not found", 104: "Value too long",
    200: "Unsupported message type", 201: "Unsupported event code",
    202: "Unsupported processing id", 203: "Unsupported version id",
    204: "Unknown key identifier", 205: "Duplicate key identifier",
    206: "Application record locked", 207: "Application internal error",
}

ENHANCED = {"AA": "CA", "AE": "CE", "AR": "CR"}

_counter = itertools.count(1)
_prefix = f"{os.getpid() % 100000:05d}"


@dataclass(frozen=True)
class AckError:
    """One ERR segment: where (segment, sequence, field), the 0357 code, severity, text."""

    code: int
    text: str
    segment: str = ""
    sequence: int = 1
    field: int = 0
    severity: str = "E"


def new_control_id() -> str:
    return f"RF{int(time.time() * 1000) % 10**11:011d}{_prefix}{next(_counter) % 10**6:06d}"


def ack_code(header: Header | None, outcome: str) -> str:
    """outcome AA/AE/AR, turned into CA/CE/CR when the sender uses enhanced mode."""
    if header is not None and header.enhanced_mode:
        return ENHANCED[outcome]
    return outcome


def wants_accept_ack(header: Header, code: str) -> bool:
    """Enhanced mode: MSH-15 says whether an accept ACK is sent (NE never, ER errors only...)."""
    if not header.enhanced_mode:
        return True
    mode = header.accept_ack_type or "AL"
    if mode == "NE":
        return False
    if mode == "ER":
        return code != "CA"
    if mode == "SU":
        return code == "CA"
    return True


def wants_application_ack(header: Header, code: str) -> bool:
    """Enhanced mode: MSH-16 says whether an application ACK follows (AL always, ER errors
    only, SU success only; NE or empty never)."""
    if not header.enhanced_mode:
        return False
    mode = header.application_ack_type
    return mode == "AL" or (mode == "ER" and code != "AA") or (mode == "SU" and code == "AA")


def build_ack(header: Header | None, code: str, *, errors: tuple[AckError, ...] = (),
              application: str = "REFLOOP", facility: str = "REFLOOP",
              now: datetime | None = None, control_id: str | None = None,
              accept_ack: str = "NE") -> bytes:
    """The ACK for `header` (None when no MSH could be read: default delimiters, empty MSA-2)."""
    if header is not None:
        d = _delimiters(header.field_separator, header.encoding_characters)
        msh2 = header.encoding_characters
        trigger = header.component(9, 2)
        version = header.version or "2.5.1"
        receiver_app, receiver_fac = header.field(3), header.field(4)
        processing, their_id = header.field(11) or "P", header.control_id
    else:
        d, msh2, trigger, version = Delimiters(), "^~\\&", "", "2.5.1"
        receiver_app = receiver_fac = their_id = ""
        processing = "P"
    f, c = d.field, d.component
    stamp = now.strftime("%Y%m%d%H%M%S%z") if now is not None else _stamp()
    text = "; ".join(e.text for e in errors)
    msh = f.join(["MSH", msh2, _escaped(application, d), _escaped(facility, d), receiver_app,
                  receiver_fac, stamp, "", f"ACK{c}{trigger}{c}ACK",
                  control_id or new_control_id(), processing, version])
    if header is not None and header.enhanced_mode:
        msh += f + f + f + accept_ack + f + "NE"
    msa = f.join(["MSA", code, their_id] + ([escape(text, d)[:80]] if text else []))
    segments = [msh, msa] + [_err(e, d, version) for e in errors]
    return ("\r".join(segments) + "\r").translate(_NO_FRAMING).encode("latin-1", "replace")


#: MLLP's start and end block bytes, left out of the fields an ACK echoes (a frame that held
#: one in its MSH got an ACK its sender read as a broken frame and a second one)
_NO_FRAMING = str.maketrans("", "", "\x0b\x1c")


@functools.lru_cache(maxsize=64)
def _delimiters(field: str, encoding: str) -> Delimiters:
    return Delimiters.from_msh(field, encoding)


@functools.lru_cache(maxsize=64)
def _escaped(value: str, d: Delimiters) -> str:
    return escape(value, d)


_stamp_cache: tuple[int, str] = (0, "")


def _stamp() -> str:
    """MSH-7 now, to the second (formatted once per second: ACKs are built by the thousand)."""
    global _stamp_cache
    second = int(time.time())
    if _stamp_cache[0] != second:
        _stamp_cache = (second, datetime.fromtimestamp(second, UTC).strftime("%Y%m%d%H%M%S%z"))
    return _stamp_cache[1]


def _err(error: AckError, d: Delimiters, version: str) -> str:
    f, c, s = d.field, d.component, d.subcomponent
    name = escape(ERROR_NAMES.get(error.code, ""), d)
    where = [error.segment, str(error.sequence) if error.segment else "",
             str(error.field) if error.field else ""]
    if _before_25(version):
        return f.join(["ERR", c.join([*where, f"{error.code}{s}{name}{s}HL70357"])])
    location = c.join(where).rstrip(c)
    return f.join(["ERR", "", location, f"{error.code}{c}{name}{c}HL70357", error.severity,
                   "", "", "", escape(error.text, d)[:250]])


def _before_25(version: str) -> bool:
    parts = version.split(".")
    try:
        return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0) < (2, 5)
    except ValueError:
        return False
