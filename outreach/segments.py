"""SMS segment counting: GSM-7 (3GPP TS 23.038 basic set plus its extension table) or UCS-2.

A message is GSM-7 when every character is in the basic set or the extension table (extension
characters cost two septets: escape plus character); otherwise the whole message is UCS-2 and
counts UTF-16 code units. One segment holds 160 septets or 70 units; a concatenated message holds
153 or 67 per segment (the user-data header takes the rest), and an escape pair or a surrogate
pair is never split across segments.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM_EXTENSION = frozenset("^{}\\[~]|€\f")

#: look-alikes replaced before counting when a message would otherwise be UCS-2 (accents that
#: GSM-7 lacks lose them; typographic quotes and dashes become their plain forms)
_PLAIN = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                        "\u2013": "-", "\u2014": "-", "\u2026": "...", "\u00a0": " ",
                        "`": "'"})


@dataclass(frozen=True)
class Segments:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int     # septets (GSM-7) or UTF-16 code units (UCS-2)
    count: int


def is_gsm7(text: str) -> bool:
    return all(c in GSM_BASIC or c in GSM_EXTENSION for c in text)


def count(text: str) -> Segments:
    """How `text` is encoded and how many segments it takes."""
    if is_gsm7(text):
        sizes = [2 if c in GSM_EXTENSION else 1 for c in text]
        return Segments("GSM-7", sum(sizes), _segments(sizes, 160, 153))
    sizes = [len(c.encode("utf-16-le")) // 2 for c in text]
    return Segments("UCS-2", sum(sizes), _segments(sizes, 70, 67))


def to_gsm7(text: str) -> str:
    """`text` with look-alikes replaced and accents GSM-7 lacks removed (é, ñ, ü stay)."""
    plain = text.translate(_PLAIN)
    out = []
    for c in plain:
        if c in GSM_BASIC or c in GSM_EXTENSION:
            out.append(c)
            continue
        base = unicodedata.normalize("NFD", c)[0]
        out.append(base if base in GSM_BASIC else c)
    return "".join(out)


def _segments(sizes: list[int], single: int, part: int) -> int:
    if sum(sizes) <= single:
        return 1 if sizes else 0
    segments, used = 1, 0
    for size in sizes:
        if used + size > part:
            segments += 1
            used = 0
        used += size
    return segments
