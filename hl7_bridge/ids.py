"""Ids for the records a message creates that later messages find by business key.

A new patient's and a new referral's ServiceRequest get a time-ordered id (a version 7 UUID,
referrals/ids.py: 48 bits of Unix time in milliseconds, then 74 random bits). Their ids
are keys of several indexes (the current-resource table, the referral's service request and
patient columns, the patient identifier index's owner column); with random ids each new record
dirtied a page of its own in each of those indexes once they outgrew memory, and mapping slowed
to a third as the store grew toward a million referrals. Time-ordered ids put each new entry
beside the last ones.

Later messages never recompute these ids: a patient is found by its identifiers (the patient
index) and a referral's ServiceRequest through the referral's keys (effects.py), and the found
id wins. Within a process the same parts get the same id while they are recent (`RecentIds`),
so a message mapped twice (ahead of its batch, again when its v2 state is merged, again after
its batch stopped) keeps its ids. Two processes that create the same new patient at the same
moment each pick an id; the second to write its patient identifiers sees the first one's and
retries (index.insert_patient_ids).

The id reveals when its record was created, to the millisecond; nothing else.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import OrderedDict

from referrals.ids import is_time_ordered, time_of, time_ordered_id, timed_uuid

__all__ = ["RecentIds", "owned_id", "recent_id", "time_ordered_id"]


def owned_id(owner_id: str, derived_id: str) -> str:
    """The id of a record that belongs to one with a time-ordered id (a patient's Coverage):
    the owner's 48 bits of time, then 74 bits of a digest of the owner's id and `derived_id`,
    the record's id derived from its business key (a version 8 UUID, RFC 9562 section 5.8).
    The same owner and key always give the same id, and it goes beside its owner's in the
    indexes. An owner whose id is not time-ordered (records from before these ids, patients
    without identifiers) gives a name-based id of the two instead."""
    if not is_time_ordered(owner_id):
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{owner_id}|{derived_id}"))
    digest = hashlib.sha256(f"{owner_id}|{derived_id}".encode()).digest()
    return timed_uuid(time_of(owner_id), 8, digest)


class RecentIds:
    """A new time-ordered id per distinct `parts`, the same one again while `parts` is among
    the last `size` asked for. Thread-safe: the next batch is mapped in a thread beside the
    writer, which may map a message of the same patient again at the same moment."""

    def __init__(self, size: int = 65536) -> None:
        self.size = size
        self.ids: OrderedDict[tuple[str, ...], str] = OrderedDict()
        self.lock = threading.Lock()

    def __call__(self, *parts: str) -> str:
        with self.lock:
            found = self.ids.get(parts)
            if found is not None:
                self.ids.move_to_end(parts)
                return found
            found = self.ids[parts] = time_ordered_id()
            if len(self.ids) > self.size:
                self.ids.popitem(last=False)
            return found


#: the process's ids for new patients and ServiceRequests (maps/patient.py, maps/referral.py)
recent_id = RecentIds()
