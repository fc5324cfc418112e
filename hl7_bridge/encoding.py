"""Delimiters (from MSH-1/MSH-2, never hard-coded) and the escape sequences of text fields."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @classmethod
    def from_msh(cls, field: str, encoding: str) -> Delimiters:
        """MSH-2 of 2 to 5 characters; a duplicated escape character (`^~\\\\&`) is tolerated."""
        chars = encoding
        if len(chars) >= 4 and chars[2] == chars[3]:
            chars = chars[:3] + chars[4:]
        defaults = "^~\\&"
        picked = [chars[i] if i < len(chars) else defaults[i] for i in range(4)]
        made = cls(field, picked[0], picked[1], picked[2], picked[3],
                   chars[4] if len(chars) > 4 else "")
        return DEFAULT if made == DEFAULT else made  # one shared object: `is DEFAULT` is cheap

    @property
    def msh2(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent + \
            self.truncation


DEFAULT = Delimiters()

_FORMATTING_BREAK = {".br", ".sp", ".ce"}


def unescape(text: str, d: Delimiters = DEFAULT, charset: str = "latin-1") -> str:
    """Decode \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\ and formatting (\\.br\\ -> newline)."""
    esc = d.escape
    if not esc or esc not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        end = text.find(esc, i + 1) if ch == esc else -1
        if end < 0:
            out.append(ch)
            i += 1
            continue
        out.append(_sequence(text[i + 1:end], d, charset, text[i:end + 1]))
        i = end + 1
    return "".join(out)


def _sequence(body: str, d: Delimiters, charset: str, raw: str) -> str:
    simple = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition,
              "E": d.escape, "P": d.truncation}
    if body in simple:
        return simple[body]
    if body in ("H", "N"):
        return ""
    head = body.split(" ")[0].lower()
    if head in _FORMATTING_BREAK:
        return "\n"
    if head in (".in", ".ti", ".sk", ".fi", ".nf"):
        return ""
    if body[:1] == "X" and re.fullmatch(r"X(?:[0-9A-Fa-f]{2})+", body):
        data = bytes.fromhex(body[1:]).replace(b"\x00", b"")  # a NUL is never data (normalise)
        try:
            return data.decode(charset)
        except (UnicodeDecodeError, LookupError):
            return data.decode("latin-1")
    if body[:1] in ("Z", "C", "M"):
        return ""
    return raw


def escape(text: str, d: Delimiters = DEFAULT) -> str:
    """Encode a value for output: delimiters become escape sequences, newlines \\.br\\."""
    e = d.escape
    table = {e: f"{e}E{e}", d.field: f"{e}F{e}", d.component: f"{e}S{e}",
             d.subcomponent: f"{e}T{e}", d.repetition: f"{e}R{e}"}
    if d.truncation:
        table[d.truncation] = f"{e}P{e}"
    out: list[str] = []
    for ch in text.replace("\r\n", "\n"):
        if ch in table:
            out.append(table[ch])
        elif ch == "\n":
            out.append(f"{e}.br{e}")
        elif ch == "\r":
            out.append(f"{e}X0D{e}")
        else:
            out.append(ch)
    return "".join(out)
