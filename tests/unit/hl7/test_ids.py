"""Time-ordered ids for new patients and ServiceRequests, and the ids of the Coverages they
own (hl7_bridge/ids.py)."""

from __future__ import annotations

import threading
import uuid

from hl7_bridge.ids import RecentIds, owned_id, time_ordered_id


def test_a_time_ordered_id_is_a_version_7_uuid_carrying_its_millisecond() -> None:
    found = uuid.UUID(time_ordered_id(now_ms=1_764_892_800_123))
    assert (found.version, found.variant) == (7, uuid.RFC_4122)
    assert found.int >> 80 == 1_764_892_800_123


def test_later_ids_sort_after_earlier_ones_and_never_repeat() -> None:
    ids = [time_ordered_id(now_ms=ms) for ms in range(1_000, 1_200) for _ in range(5)]
    assert len(set(ids)) == len(ids)
    by_ms = [i[:13] for i in ids]
    assert by_ms == sorted(by_ms)


def test_the_same_parts_get_the_same_id_while_recent() -> None:
    recent = RecentIds(size=2)
    first = recent("Patient", "urn:oid:1.2|A1")
    assert recent("Patient", "urn:oid:1.2|A1") == first
    assert recent("Patient", "urn:oid:1.2|A2") != first
    recent("Patient", "urn:oid:1.2|A3")  # A1 was the least recent: forgotten
    assert recent("Patient", "urn:oid:1.2|A1") != first
    assert len(recent.ids) == 2


def test_threads_asking_for_the_same_parts_at_once_get_one_id() -> None:
    recent = RecentIds()
    start, found = threading.Barrier(8), []

    def ask() -> None:
        start.wait()
        found.extend(recent("ServiceRequest", "EHRX", f"R-{n}") for n in range(300))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(found)) == 300


def test_an_owned_id_sits_beside_its_owner_and_is_the_same_each_time() -> None:
    owner = time_ordered_id(now_ms=0x0190C4A21234)
    derived = "9f6525e2-9d23-55d7-95ad-d10bcd45af23"
    made = owned_id(owner, derived)
    value = uuid.UUID(made)
    assert (value.version, value.variant) == (8, uuid.RFC_4122)
    assert made[:13] == owner[:13] and made == owned_id(owner, derived)
    assert made != owned_id(time_ordered_id(now_ms=0x0190C4A21234), derived)  # another owner
    assert made != owned_id(owner, "another-key")


def test_an_owner_from_before_time_ordered_ids_gets_a_name_based_id_of_its_own() -> None:
    old_owner, derived = str(uuid.uuid4()), "9f6525e2-9d23-55d7-95ad-d10bcd45af23"
    own = owned_id(old_owner, derived)
    assert own != derived and own == owned_id(old_owner, derived)
    assert own != owned_id(str(uuid.uuid4()), derived)
