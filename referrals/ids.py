"""Time-ordered ids, and the short form people read and type.

New referrals (and the v2 bridge's new patients and ServiceRequests) get a version 7 UUID
(RFC 9562 section 5.7): 48 bits of Unix time in milliseconds, then 74 random bits. Their ids are
keys of several indexes (the referral table's key, its events, the v2 bridge's referral keys,
the current-resource table); with random ids each new record dirtied a page of its own in each
of those indexes once they outgrew memory, and writing slowed as the store grew toward a million
referrals. Time-ordered ids put each new entry beside the last ones.

The id reveals when its record was created, to the millisecond; nothing else.

The beginning of such an id is the same for every record of a minute, so listings show the
end instead: `short_id` is the last 8 characters (32 random bits). Older referrals have random
(version 4) ids; their short id is the end too, and the beginning they were listed by before
still finds them (referral_ids.py).
"""

from __future__ import annotations

import os
import time

_VERSION_7 = 0x7 << 76
_VARIANT = 0b10 << 62
_RAND_A = (1 << 12) - 1
_RAND_B = (1 << 62) - 1

#: how many characters of an id its short form shows
SHORT = 8


def time_ordered_id(now_ms: int | None = None) -> str:
    """A version 7 UUID in its usual text form."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = ((ms & ((1 << 48) - 1)) << 80) | _VERSION_7 | ((rand >> 62) & _RAND_A) << 64 \
        | _VARIANT | (rand & _RAND_B)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def short_id(record_id: str) -> str:
    """The part of an id that listings, demos and letters show: its last 8 characters."""
    return record_id[-SHORT:]
