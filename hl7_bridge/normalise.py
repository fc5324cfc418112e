"""From raw bytes to clean segments: BOM, CR/LF/CRLF, blank lines, MSH-18 charset, batches."""

from __future__ import annotations

import re

from hl7_bridge.header import BOM, parse_header

#: HL7 table 0211 (MSH-18) -> Python codec.
CHARSETS = {
    "": "ascii", "ASCII": "ascii", "8859/1": "latin-1", "8859/2": "iso8859-2",
    "8859/3": "iso8859-3", "8859/4": "iso8859-4", "8859/5": "iso8859-5",
    "8859/6": "iso8859-6", "8859/7": "iso8859-7", "8859/8": "iso8859-8",
    "8859/9": "iso8859-9", "8859/15": "iso8859-15", "ISO IR6": "ascii",
    "ISO IR100": "latin-1", "ISO IR14": "iso2022_jp", "ISO IR87": "iso2022_jp",
    "ISO IR159": "iso2022_jp_2", "GB 18030-2000": "gb18030", "KS X 1001": "euc_kr",
    "CNS 11643-1992": "big5", "BIG-5": "big5", "UNICODE": "utf-8", "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8", "UNICODE UTF-16": "utf-16", "UNICODE UTF-32": "utf-32",
}

_SEGMENT_END = re.compile(r"\r\n|\r|\n")
BATCH_SEGMENTS = frozenset({"FHS", "BHS", "BTS", "FTS"})


class CharsetError(ValueError):
    """MSH-18 names a character set we cannot decode."""


def codec_for(msh18: str, fallback: str = "utf-8") -> str:
    """The Python codec for MSH-18; empty MSH-18 uses the sender's fallback (UTF-8 by default)."""
    name = msh18.strip().upper()
    if not name:
        return fallback
    codec = CHARSETS.get(name)
    if codec is None:
        raise CharsetError(f"MSH-18 character set {msh18!r} is not supported")
    return codec


def decode(raw: bytes, fallback: str = "utf-8") -> tuple[str, str]:
    """Text of a message and the codec used: MSH-18 first, then the sender's fallback.

    ASCII declared (or nothing declared) but bytes above 0x7F is common: such text is read with
    the fallback, and if that fails too, as ISO-8859-1 (which cannot fail), never rejected.
    """
    body = raw[3:] if raw.startswith(BOM) else raw
    declared = codec_for(parse_header(body).charset, fallback)
    for codec in dict.fromkeys((declared if declared != "ascii" else fallback, fallback)):
        try:
            return _without_nul(body.decode(codec)), codec
        except UnicodeDecodeError:
            continue
    return _without_nul(body.decode("latin-1")), "latin-1"


def _without_nul(text: str) -> str:
    """A NUL is never data in v2 and no store can be relied on to hold it (PostgreSQL text
    and jsonb cannot): left out. The ACK path answers AE to new messages that carry one."""
    return text.replace("\x00", "") if "\x00" in text else text


def split_segments(text: str) -> list[str]:
    """Segments, whatever the line ends; blank lines dropped; a leading BOM removed."""
    text = text.lstrip("\ufeff")
    return [s for s in _SEGMENT_END.split(text) if s.strip()]


def split_batch(segments: list[str]) -> list[list[str]]:
    """Messages of a file or batch (FHS/BHS ... BTS/FTS); a plain message gives one group."""
    messages: list[list[str]] = []
    for segment in segments:
        name = segment[:3]
        if name in BATCH_SEGMENTS:
            continue
        if name == "MSH" or not messages:
            messages.append([])
        messages[-1].append(segment)
    return [m for m in messages if m and m[0].startswith("MSH")]

