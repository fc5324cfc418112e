"""v2 update semantics: a message changes only what it carries. An empty field means "no
change", `""` means "delete", and both are applied field by field.

Each thing the bridge maps keeps its effective v2 state (table `hl7_entity_state`): the segments
that describe it, in the standard encoding (`|^~\\&`). A new message's segments for it are merged
into that state by the rules below, and the maps run over the merged message, so a resource
always says what the messages about it said together (docs/hl7v2.md, "Updates").

Rules, per segment:
- single segments (PID, RF1, ORC, SCH, TQ1) and keyed ones (PRD by PRD-1 role, OBR by OBR-1 set
  id, IN1 by IN1-1 set id with its IN2) are merged field by field with the stored segment of the
  same key: a valued field replaces the stored one (all its repetitions and components), `""`
  empties it, an empty field keeps it. Stored segments whose key the message does not send are
  kept. PID-3 is the exception: identifiers accumulate (a new one is added first), as they do
  in the patient index, up to the newest MAX_IDENTIFIERS; a merge (A40) retires an identifier.
- list segments (DG1, NTE, AIS, AIP, AIL) are replaced as a whole when the message carries any,
  and kept when it carries none; one segment whose content field (DG1-3, NTE-3, AIS-3, AIP-3,
  AIL-3) is `""` empties the list.
"""

from __future__ import annotations

from hl7_bridge.encoding import DEFAULT, Delimiters
from hl7_bridge.message import Message, Segment, parse_segments

#: the standard encoding (Delimiters.from_msh hands out this one object for it)
STANDARD = DEFAULT
NULL = '""'
#: identifiers kept in a patient's PID-3 (the newest)
MAX_IDENTIFIERS = 32

#: the segments of each kind of state, in the order the merged message lists them
PATIENT = ("PID",)
PATIENT_WITH_INSURANCE = ("PID", "IN1", "IN2")
REFERRAL = ("RF1", "PRD", "IN1", "IN2", "DG1", "OBR", "NTE")
ORDER = ("ORC", "OBR", "TQ1", "IN1", "IN2")
APPOINTMENT = ("SCH", "TQ1", "AIS", "AIP", "AIL")

#: list segments and the field whose `""` empties the list
LISTS = {"DG1": 3, "NTE": 3, "AIS": 3, "AIP": 3, "AIL": 3}
#: keyed segments: segment -> the field that keys it (single segments have one key); two
#: segments with the same key value in one message are told apart by their order
KEYS = {"PRD": 1, "OBR": 1, "IN1": 1}

State = list[str]


def to_standard(seg: Segment) -> str:
    """One segment re-encoded with the standard delimiters (its escapes kept as they are)."""
    d = seg.d
    if d is STANDARD and seg.name != "MSH":
        return "|".join(seg.fields)
    if seg.name == "MSH":
        fields = ["MSH", STANDARD.msh2.rstrip(), *(_recode(f, d) for f in seg.fields[3:])]
        return "|".join(fields)
    return "|".join([seg.name, *(_recode(f, d) for f in seg.fields[1:])])


def _recode(raw: str, d: Delimiters) -> str:
    if d.truncation:
        raw = raw.replace(d.truncation, "")
    if d is STANDARD or not raw:
        return raw
    mine = {d.component: "^", d.repetition: "~", d.escape: "\\", d.subcomponent: "&"}
    out = []
    for ch in raw:
        if ch in mine:
            out.append(mine[ch])
        elif ch in "|^~\\&":  # a standard delimiter that is plain text in this message
            out.append({"|": "\\F\\", "^": "\\S\\", "~": "\\R\\", "\\": "\\E\\",
                        "&": "\\T\\"}[ch])
        else:
            out.append(ch)
    return "".join(out)


def parse_state(state: State, charset: str) -> list[Segment]:
    lines = ["MSH|^~\\&", *state]
    return parse_segments(lines, charset).segments[1:]


def merge(stored: State | None, new: list[Segment], names: tuple[str, ...], charset: str
          ) -> State:
    """The state after `new` (the message's segments of `names`): the rules above. Segments
    of the stored state that `names` does not cover are kept unchanged."""
    if not stored:
        return [to_standard(s) for s in new if s.name in names]
    old = parse_state(stored, charset)
    fresh = [_standard_segment(s) for s in new if s.name in names]
    out: list[str] = []
    for name in _order(names, old):
        if name == "IN2":
            continue  # travels with its IN1
        mine = [s for s in old if s.name == name]
        theirs = [s for s in fresh if s.name == name]
        if name not in names:
            out += [to_standard(s) for s in mine]
        elif name in LISTS:
            out += _merge_list(mine, theirs, LISTS[name])
        elif name == "IN1":
            out += _merge_insurance(old, fresh)
        else:
            out += _merge_keyed(mine, theirs, KEYS.get(name, 0))
    return out


def merged_message(msg: Message, patient: State | None, main: State,
                   main_names: tuple[str, ...]) -> Message:
    """The message the maps read: its MSH, the merged PID (when the patient has a state) and
    main state, and the message's other segments (MRG, TXA, OBX...) that no state covers."""
    covered = {"MSH", "PID", *main_names}
    lines = [to_standard(msg.msh)]
    pid = [line for line in patient or [] if line.startswith("PID|")]
    lines += pid or [to_standard(s) for s in msg.all("PID")]
    lines += main
    lines += [to_standard(s) for s in msg.segments[1:] if s.name not in covered]
    return parse_segments(lines, msg.charset, msg.default_version)


# --- the rules ------------------------------------------------------------------------------

def _keys(segments: list[Segment], field: int) -> list[str]:
    """Each segment's key: the keying field's value and its occurrence in the message."""
    seen: dict[str, int] = {}
    keys = []
    for seg in segments:
        value = seg.get(field).upper() if field else ""
        seen[value] = seen.get(value, -1) + 1
        keys.append(f"{value}#{seen[value]}")
    return keys


def _standard_segment(seg: Segment) -> Segment:
    if seg.d is STANDARD:
        return seg
    return parse_state([to_standard(seg)], seg.charset)[0]


def _order(names: tuple[str, ...], old: list[Segment]) -> list[str]:
    return list(dict.fromkeys([*names, *(s.name for s in old)]))


def _merge_fields(old: Segment, new: Segment) -> list[str]:
    count = max(len(old.fields), len(new.fields))
    fields = [new.name]
    for n in range(1, count):
        value = new.raw(n)
        if value == "":
            fields.append(old.raw(n))
        elif value == NULL:
            fields.append("")
        elif new.name == "PID" and n == 3:
            fields.append(_accumulate(old, new, n))
        else:
            fields.append(value)
    while len(fields) > 1 and fields[-1] == "":
        fields.pop()
    return fields


def _accumulate(old: Segment, new: Segment, n: int) -> str:
    """PID-3: the new identifiers, then the stored ones it does not repeat (CX.1 + CX.4), up
    to MAX_IDENTIFIERS (a feed that sends one placeholder SSN with every MRN must not grow a
    patient without bound)."""
    reps = new.repetitions(n)
    seen = {(new.get(n, 1, rep=r), new.get(n, 4, rep=r)) for r in range(len(reps))}
    for r, rep in enumerate(old.repetitions(n)):
        if len(reps) >= MAX_IDENTIFIERS:
            break
        key = (old.get(n, 1, rep=r), old.get(n, 4, rep=r))
        if key not in seen:
            reps.append(rep)
            seen.add(key)
    return "~".join(reps)


def _merge_keyed(old: list[Segment], new: list[Segment], field: int) -> State:
    stored = dict(zip(_keys(old, field), old, strict=True))
    merged: dict[str, list[str]] = {k: s.fields for k, s in stored.items()}
    for k, seg in zip(_keys(new, field), new, strict=True):
        merged[k] = _merge_fields(stored[k], seg) if k in stored else _without_nulls(seg)
    return ["|".join(fields) for fields in merged.values()]


def _merge_list(old: list[Segment], new: list[Segment], content: int) -> State:
    if not new:
        return [to_standard(s) for s in old]
    if len(new) == 1 and new[0].raw(content) == NULL:
        return []
    return ["|".join(_without_nulls(s)) for s in new]


def _merge_insurance(old: list[Segment], new: list[Segment]) -> State:
    """IN1 keyed by set id, each with the IN2 after it (merged the same way)."""
    def pairs(segments: list[Segment]) -> dict[str, tuple[Segment, Segment | None]]:
        found: dict[str, tuple[Segment, Segment | None]] = {}
        in1s = [s for s in segments if s.name == "IN1"]
        keys = dict(zip((id(s) for s in in1s), _keys(in1s, KEYS["IN1"]), strict=True))
        last = ""
        for seg in segments:
            if seg.name == "IN1":
                last = keys[id(seg)]
                found[last] = (seg, None)
            elif seg.name == "IN2" and last in found and found[last][1] is None:
                found[last] = (found[last][0], seg)
        return found

    stored, sent = pairs(old), pairs(new)
    out: State = []
    for k in dict.fromkeys([*stored, *sent]):
        mine, theirs = stored.get(k), sent.get(k)
        for at in (0, 1):
            a = mine[at] if mine else None
            b = theirs[at] if theirs else None
            if b is not None:
                out.append("|".join(_merge_fields(a, b) if a is not None
                                    else _without_nulls(b)))
            elif a is not None:
                out.append(to_standard(a))
    return out


def _without_nulls(seg: Segment) -> list[str]:
    fields = ["" if f == NULL else f for f in seg.fields]
    while len(fields) > 1 and fields[-1] == "":
        fields.pop()
    return fields
