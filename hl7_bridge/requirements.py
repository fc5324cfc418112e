"""What mapping needs from a message, checked on the ACK path where it costs a few splits.

The mapping (hl7_bridge/maps/referral.py `referral_key`) keys a REF/RRI on RF1-6, else on the
order numbers ORC-2/OBR-2 (placer), ORC-3/OBR-3 (filler) or ORC-4 (placer group). A REF/RRI
without any of them can never become a referral, so the sender is told at once
(AE, or CA and an application ACK AE in enhanced mode) with an ERR naming RF1-6, instead of an
AA followed by a silent quarantine at mapping time.

This module reads raw segment lines (the first repetition, the first component) and does not
parse the message; the same rule is kept by the mapping, which quarantines anything that still
slips through.
"""

from __future__ import annotations

import re

from hl7_bridge.ack import AckError
from hl7_bridge.header import Header

#: structures whose mapping always needs a referral identifier (an OMG/ORM needs one only when
#: its OBR-4 makes it a referral, which the mapping decides; it is not checked here)
KEYED = frozenset({"REF_I12", "RRI_I12"})
#: (segment, field) that can carry the identifier, in the order mapping looks at them
KEY_FIELDS = (("RF1", 6), ("ORC", 2), ("OBR", 2), ("ORC", 3), ("OBR", 3), ("ORC", 4))

_LINES = re.compile(rb"\r\n|\r|\n")
#: the longest entity identifier (EI.1) we key a referral on: the HL7 v2.7+ maximum length
KEY_ID_MAX = 199


def missing_referral_key(raw: bytes, header: Header, structure: str) -> AckError | None:
    """An ERR for a referral message without any identifier mapping can key it on."""
    if structure not in KEYED:
        return None
    separator = header.field_separator.encode("latin-1")
    component = header.component_separator.encode("latin-1")
    repetition = (header.encoding_characters[1:2] or "~").encode("latin-1")
    wanted = {name.encode("ascii") for name, _ in KEY_FIELDS}
    segments: dict[bytes, list[bytes]] = {}
    for line in _LINES.split(raw):
        name = line[:3]
        if name in wanted and name not in segments and line[3:4] == separator:
            segments[name] = line.split(separator)
    for name, number in KEY_FIELDS:
        fields = segments.get(name.encode("ascii"))
        if fields is None or number >= len(fields):
            continue
        value = fields[number].split(repetition, 1)[0].split(component, 1)[0].strip()
        if len(value) > KEY_ID_MAX:
            return AckError(104, f"{name}-{number} referral identifier is longer than "
                            f"{KEY_ID_MAX} characters (the HL7 maximum of EI.1); it cannot be "
                            "stored as a referral key", name, 1, number)
        if value and value != b'""':
            return None
    return AckError(101, "RF1-6 originating referral identifier is empty: the referral "
                    "cannot be matched or created; send RF1-6 (or an ORC/OBR placer order "
                    "number)", "RF1", 1, 6)
