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

_VARIANT = 0b10 << 62
_RAND_A = (1 << 12) - 1
_RAND_B = (1 << 62) - 1

#: how many characters of an id its short form shows
SHORT = 8


def time_ordered_id(now_ms: int | None = None) -> str:
    """A version 7 UUID in its usual text form."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return timed_uuid(ms, 7, os.urandom(10))


def timed_uuid(ms: int, version: int, rand: bytes) -> str:
    """A UUID in its usual text form whose first 48 bits are the Unix time `ms` in milliseconds,
    followed by `version` and 74 bits of the 10 bytes `rand` (RFC 9562: version 7 when `rand`
    is random, 8 for any other layout)."""
    bits = int.from_bytes(rand[:10], "big")
    value = ((ms & ((1 << 48) - 1)) << 80) | (version << 76) | ((bits >> 62) & _RAND_A) << 64 \
        | _VARIANT | (bits & _RAND_B)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def is_time_ordered(record_id: str) -> bool:
    """Whether `record_id` is a version 7 UUID in its usual text form."""
    return len(record_id) == 36 and record_id[14] == "7" and record_id[8] == "-"


def time_of(record_id: str) -> int:
    """The millisecond a time-ordered id (`is_time_ordered`) was made."""
    return int(record_id[:8] + record_id[9:13], 16)


def short_id(record_id: str) -> str:
    """The part of an id that listings, demos and letters show: its last 8 characters."""
    return record_id[-SHORT:]
