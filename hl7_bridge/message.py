"""The lean parsed message the maps read: segments split on demand, values unescaped on access.

Field numbers follow HL7 (MSH-1 is the field separator, so MSH fields keep their numbers).
Components and sub-components are 1-based; repetitions are 0-based.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from hl7_bridge.encoding import Delimiters, unescape
from hl7_bridge.normalise import decode, split_batch, split_segments
from hl7_bridge.structure import structure_of


class MessageError(ValueError):
    """The message cannot be read (no MSH, unusable delimiters)."""


@dataclass
class Segment:
    name: str
    fields: list[str]
    d: Delimiters
    charset: str = "latin-1"
    #: field number -> repetitions -> raw components, split once when first read
    _split: dict[int, list[list[str]]] = field(default_factory=dict, repr=False, compare=False)

    def raw(self, number: int) -> str:
        return self.fields[number] if 0 <= number < len(self.fields) else ""

    def repetitions(self, number: int) -> list[str]:
        value = self.raw(number)
        if self.name == "MSH" and number <= 2:
            return [value]
        return value.split(self.d.repetition) if value else []

    def components(self, number: int, rep: int = 0) -> list[str]:
        """The raw components of one repetition (cached)."""
        reps = self._split.get(number)
        if reps is None:
            if self.name == "MSH" and number <= 2:
                reps = [[self.raw(number)]]
            else:
                component = self.d.component
                reps = [r.split(component) for r in self.repetitions(number)]
            self._split[number] = reps
        return reps[rep] if rep < len(reps) else []

    def values(self, number: int, rep: int = 0) -> list[str]:
        """Each component's value (its first sub-component), unescaped; [] when absent."""
        sub = self.d.subcomponent
        return [self.text(c.split(sub, 1)[0] if sub in c else c) if c else ""
                for c in self.components(number, rep)]

    def get(self, number: int, component: int = 1, sub: int = 1, rep: int = 0) -> str:
        """One value, unescaped, truncation character removed; "" when absent."""
        reps = self._split.get(number)
        comps = reps[rep] if reps is not None and rep < len(reps) else \
            self.components(number, rep)
        if component > len(comps):
            return ""
        raw = comps[component - 1]
        if not raw:
            return ""
        if self.d.subcomponent in raw:
            subs = raw.split(self.d.subcomponent)
            raw = subs[sub - 1] if sub <= len(subs) else ""
        elif sub > 1:
            return ""
        return self.text(raw) if raw else ""

    def text(self, raw: str) -> str:
        if not raw:
            return ""
        if self.d.truncation:
            raw = raw.replace(self.d.truncation, "")
        if self.d.escape in raw:
            raw = unescape(raw, self.d, self.charset)
        return "" if raw == '""' else raw

    def whole(self, number: int, rep: int = 0) -> str:
        """A text field (TX/FT/ST) unescaped as a whole, components kept literally."""
        reps = self.repetitions(number)
        return self.text(reps[rep]) if rep < len(reps) else ""


@dataclass
class Message:
    segments: list[Segment]
    d: Delimiters
    charset: str
    default_version: str = "2.5.1"
    _by_name: dict[str, list[Segment]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for segment in self.segments:
            self._by_name.setdefault(segment.name, []).append(segment)

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def first(self, name: str) -> Segment | None:
        found = self._by_name.get(name)
        return found[0] if found else None

    def all(self, name: str) -> list[Segment]:
        return list(self._by_name.get(name, []))

    def names(self) -> list[str]:
        return [s.name for s in self.segments]

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    @property
    def message_type(self) -> str:
        return self.msh.get(9, 1).upper()

    @property
    def trigger_event(self) -> str:
        return self.msh.get(9, 2).upper()

    @property
    def structure(self) -> str:
        """From table 0354, not from MSH-9.3 (often missing or wrong)."""
        return structure_of(self.message_type, self.trigger_event) or self.msh.get(9, 3)

    @property
    def control_id(self) -> str:
        return self.msh.raw(10)

    @property
    def version(self) -> str:
        return self.msh.get(12) or self.default_version

    @property
    def sender(self) -> str:
        app = self.msh.get(3) or self.msh.get(3, 2)
        facility = self.msh.get(4) or self.msh.get(4, 2)
        return f"{app}^{facility}"

    def groups(self, leader: str, members: tuple[str, ...]) -> list[list[Segment]]:
        """Each `leader` segment with the `members` that follow it until the next leader."""
        out: list[list[Segment]] = []
        for segment in self.segments:
            if segment.name == leader:
                out.append([segment])
            elif out and segment.name in members:
                out[-1].append(segment)
        return out


def parse_segments(lines: list[str], charset: str, default_version: str = "2.5.1") -> Message:
    if not lines or not lines[0].startswith("MSH") or len(lines[0]) < 8:
        raise MessageError("the message does not start with an MSH segment")
    separator = lines[0][3]
    encoding = lines[0][4:].split(separator, 1)[0]
    d = Delimiters.from_msh(separator, encoding)
    segments: list[Segment] = []
    for line in lines:
        name = line[:3]
        parts = line.split(separator)
        fields = ["MSH", separator, *parts[1:]] if name == "MSH" else [name, *parts[1:]]
        segments.append(Segment(name, fields, d, charset))
    return Message(segments, d, charset, default_version)


def parse_messages(raw: bytes, *, fallback_charset: str = "utf-8",
                   default_version: str = "2.5.1") -> list[Message]:
    """Every message in `raw` (one, or several in an FHS/BHS batch), normalised and split."""
    try:
        text, codec = decode(raw, fallback_charset)
    except ValueError as exc:
        raise MessageError(str(exc)) from exc
    groups = split_batch(split_segments(text))
    if not groups:
        raise MessageError("no MSH segment found")
    return [parse_segments(g, codec, default_version) for g in groups]


def parse_message(raw: bytes, *, fallback_charset: str = "utf-8",
                  default_version: str = "2.5.1") -> Message:
    """The first (usually only) message in `raw`."""
    return parse_messages(raw, fallback_charset=fallback_charset,
                          default_version=default_version)[0]
