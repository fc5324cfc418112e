"""The lean reading of MSH that the ACK path uses: no full parse, a few splits on one line.

The MSH line is decoded as ISO-8859-1, which maps every byte to one character, so values echoed
in the ACK (MSH-10 above all) go back to the sender byte for byte whatever its charset.
"""

from __future__ import annotations

from dataclasses import dataclass

BOM = b"\xef\xbb\xbf"
BATCH_HEADERS = (b"FHS", b"BHS")


class HeaderError(ValueError):
    """No readable MSH: the message cannot be routed or acknowledged properly."""


@dataclass(frozen=True)
class Header:
    """MSH fields by their HL7 numbers (MSH-1 is the field separator)."""

    fields: tuple[str, ...]

    @property
    def field_separator(self) -> str:
        return self.fields[1]

    @property
    def encoding_characters(self) -> str:
        return self.fields[2]

    @property
    def component_separator(self) -> str:
        return self.fields[2][:1] or "^"

    def field(self, number: int) -> str:
        return self.fields[number] if number < len(self.fields) else ""

    def component(self, number: int, component: int = 1) -> str:
        parts = self.field(number).split(self.component_separator)
        return parts[component - 1] if component <= len(parts) else ""

    @property
    def sending_application(self) -> str:
        return _hd_name(self.field(3), self.component_separator)

    @property
    def sending_facility(self) -> str:
        return _hd_name(self.field(4), self.component_separator)

    @property
    def sender(self) -> str:
        """MSH-3^MSH-4, each reduced to its namespace id (or universal id when that is empty)."""
        return f"{self.sending_application}^{self.sending_facility}"

    @property
    def message_type(self) -> str:
        return self.component(9, 1).upper()

    @property
    def trigger_event(self) -> str:
        return self.component(9, 2).upper()

    @property
    def structure(self) -> str:
        return self.component(9, 3).upper()

    @property
    def control_id(self) -> str:
        return self.field(10)

    @property
    def processing_id(self) -> str:
        return self.component(11, 1)

    @property
    def version(self) -> str:
        return self.component(12, 1)

    @property
    def accept_ack_type(self) -> str:
        return self.field(15).upper()

    @property
    def application_ack_type(self) -> str:
        return self.field(16).upper()

    @property
    def charset(self) -> str:
        """MSH-18, first repetition."""
        repetition = self.fields[2][1:2] or "~"
        return self.field(18).split(repetition)[0].strip()

    @property
    def enhanced_mode(self) -> bool:
        return bool(self.accept_ack_type or self.application_ack_type)


def strip_bom(raw: bytes) -> bytes:
    return raw[3:] if raw.startswith(BOM) else raw


def find_msh(raw: bytes) -> int:
    """Offset of the first MSH segment (after a BOM, blank lines or FHS/BHS batch headers)."""
    at = 0
    while at < len(raw):
        while at < len(raw) and raw[at] in b"\r\n \t\x00":
            at += 1
        if raw.startswith(b"MSH", at):
            return at
        if at == 0 and raw.startswith(BOM):
            at = 3
            continue
        if not raw.startswith(BATCH_HEADERS, at) and not raw.startswith(BOM, at):
            break
        nxt = min((i for i in (raw.find(b"\r", at), raw.find(b"\n", at)) if i >= 0),
                  default=-1)
        if nxt < 0:
            break
        at = nxt
    raise HeaderError("the message does not start with an MSH segment")


def is_batch(raw: bytes) -> bool:
    return strip_bom(raw).lstrip(b"\r\n").startswith(BATCH_HEADERS)


def parse_header(raw: bytes) -> Header:
    """Read MSH from the raw bytes of a message (or of a batch: its first MSH)."""
    at = find_msh(raw)
    end = len(raw)
    for terminator in (b"\r", b"\n"):
        found = raw.find(terminator, at)
        if 0 <= found < end:
            end = found
    line = raw[at:end].decode("latin-1")
    if len(line) < 8:
        raise HeaderError("the MSH segment is too short to hold its encoding characters")
    separator = line[3]
    if separator.isalnum() or separator in " \t":
        raise HeaderError(f"MSH-1 field separator {separator!r} is not usable")
    parts = line.split(separator)
    # parts[0] = "MSH", parts[1] = MSH-2; insert MSH-1 so that indexes are HL7 field numbers
    fields = ("MSH", separator, *parts[1:])
    encoding = fields[2]
    if not 2 <= len(encoding) <= 5 or separator in encoding:
        raise HeaderError(f"MSH-2 encoding characters {encoding!r} are not valid")
    problem = encoding_problem(encoding)
    if problem:
        # MSH-3 onwards split on the field separator alone are still readable: the ACK can
        # echo MSH-10, with the default encoding characters
        raise EncodingCharactersError(problem, Header(("MSH", separator, "^~\\&", *parts[2:])))
    return Header(fields)


class EncodingCharactersError(HeaderError):
    """MSH-2 is unusable (repeated or alphanumeric delimiters); `header` is a best-effort
    reading (default encoding characters) from which an ACK can still be built."""

    def __init__(self, message: str, header: Header) -> None:
        super().__init__(message)
        self.header = header


def encoding_problem(encoding: str) -> str | None:
    """Why MSH-2 cannot delimit a message (None when it can). Component, repetition, escape and
    subcomponent characters must differ from each other; a duplicated escape character
    (`^~\\\\&`) and the v2.7 truncation character are tolerated."""
    chars = encoding[:3] + encoding[4:] if encoding[2:4] in ("\\\\",) else encoding
    delimiters = chars[:4]
    if len(set(delimiters)) != len(delimiters):
        return (f"MSH-2 encoding characters {encoding!r} repeat a delimiter; each of component, "
                "repetition, escape and subcomponent needs its own character")
    if any(c.isalnum() or c in " \t\r\n" for c in chars):
        return f"MSH-2 encoding characters {encoding!r} contain a letter, digit or blank"
    return None


def _hd_name(value: str, component: str) -> str:
    parts = value.split(component)
    return (parts[0] or (parts[1] if len(parts) > 1 else "")).strip()
