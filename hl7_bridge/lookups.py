"""A batch of messages' reads and writes, done in bulk.

Reads: what the batch's identifiers lead to (patient index, current resource versions, referral
keys, parked messages, v2 states) is read by one query per kind before the batch, kept current
by the batch's own changes (nothing just decided is read back), and asked of the database only
for what the bulk reads did not cover.

Writes: resource versions, index rows, parks, v2 states and re-queued work are decided in
memory and written by `flush`, one statement per kind, in the batch's transaction; the
referral changes go through `referrals.batch.ReferralBatch` the same way. A failed message
stops the batch before anything of it is written (apply.py), so the lookups never hold half a
message.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from hl7_bridge import index
from referrals.batch import ReferralBatch
from referrals.store.resources import (
    CurrentVersion,
    PendingWrites,
    ResourceKey,
    ResourceStore,
)

Pair = tuple[str, str]
WORK_KIND = "hl7.message"


class BatchLookups:
    def __init__(self, conn: Connection, resources: ResourceStore,
                 referrals: ReferralBatch, work: Any) -> None:
        self.conn = conn
        self.resources = resources
        self.referrals = referrals
        self.work = work
        #: (system, value) -> (patient id, server), or None when known to be unindexed
        self.patients: dict[Pair, tuple[str, str] | None] = {}
        #: resource key -> current version, or None when we hold none
        self.current: dict[ResourceKey, CurrentVersion | None] = {}
        #: referral business key -> referral id, or None when unknown
        self.referral_ids: dict[str, str | None] = {}
        #: waited-for key -> (parked row id or 0 when parked in this batch, inbox id)
        self.parked: dict[str, list[tuple[int, int]]] = {}
        #: entity -> its v2 state (CR-separated segments), or None when it has none
        self.states: dict[str, str | None] = {}
        # pending writes
        self.pending = PendingWrites()
        self.new_keys: list[dict[str, str]] = []
        self.new_patient_ids: list[dict[str, str]] = []
        self.new_parks: list[dict[str, Any]] = []
        self.unparked: set[int] = set()
        self.requeue: list[tuple[str, dict[str, Any], str]] = []
        self.changed_states: dict[str, str] = {}

    # bulk loading -----------------------------------------------------------------------------

    def load_patients(self, pairs: set[Pair]) -> None:
        missing = {pair for pair in pairs if pair not in self.patients}
        if not missing:
            return
        found = index.patients_by_identifier(self.conn, missing)
        for pair in missing:
            self.patients.setdefault(pair, found.get(pair))

    def load_resources(self, keys: set[ResourceKey]) -> None:
        missing = {key for key in keys if key not in self.current}
        if not missing:
            return
        found = self.resources.current_many(missing, self.conn)
        for key in missing:
            self.current.setdefault(key, found.get(key))

    def load_referral_keys(self, keys: set[str]) -> None:
        missing = {key for key in keys if key not in self.referral_ids}
        if not missing:
            return
        found = index.referral_ids_by_key(self.conn, missing)
        for key in missing:
            self.referral_ids.setdefault(key, found.get(key))

    def load_parked(self, keys: set[str]) -> None:
        missing = {key for key in keys if key not in self.parked}
        if not missing:
            return
        found = index.parked_by_key(self.conn, missing)
        for key in missing:
            self.parked.setdefault(key, found.get(key, []))

    def load_states(self, entities: set[str]) -> None:
        missing = {entity for entity in entities if entity not in self.states}
        if not missing:
            return
        found = index.states(self.conn, missing)
        for entity in missing:
            self.states.setdefault(entity, found.get(entity))

    # reads ------------------------------------------------------------------------------------

    def try_get_patient(self, identifiers: list[dict[str, Any]]) -> tuple[str, str] | None:
        """(patient id, server) of the first identifier we know (as index.try_get_patient)."""
        pairs = [(str(i["system"]), str(i["value"])) for i in identifiers]
        self.load_patients(set(pairs))
        return next((found for pair in pairs if (found := self.patients[pair]) is not None),
                    None)

    def try_get_resource(self, server: str, rtype: str, rid: str) -> dict[str, Any] | None:
        current = self.current_of((server, rtype, rid))
        return None if current is None or current.deleted else current.body

    def current_of(self, key: ResourceKey) -> CurrentVersion | None:
        if key not in self.current:
            self.load_resources({key})
        return self.current[key]

    def try_get_referral_id(self, key: str) -> str | None:
        if key not in self.referral_ids:
            self.load_referral_keys({key})
        return self.referral_ids[key]

    def state(self, entity: str) -> list[str] | None:
        """The entity's v2 segments (merge.py), or None when it has none yet."""
        if entity not in self.states:
            self.load_states({entity})
        found = self.states[entity]
        return found.split("\r") if found else None

    # changes (written by flush) ---------------------------------------------------------------

    def put(self, resource: dict[str, Any], server: str) -> None:
        key = (server, str(resource["resourceType"]), str(resource["id"]))
        self.current[key] = self.resources.put_later(resource, self.current_of(key),
                                                     server=server, pending=self.pending)

    def index_patient(self, patient_id: str, server: str,
                      identifiers: list[dict[str, Any]]) -> None:
        """Index the identifiers nobody holds yet (an identifier keeps its first patient; a
        merge moves it, see apply.py)."""
        pairs = [(str(i["system"]), str(i["value"])) for i in identifiers]
        self.load_patients(set(pairs))
        for pair in pairs:
            if self.patients[pair] is None:
                self.patients[pair] = (patient_id, server)
                self.new_patient_ids.append({"system": pair[0], "value": pair[1],
                                             "patient_id": patient_id, "server": server})

    def add_referral_key(self, key: str, referral_id: str, sender: str, patient: str) -> None:
        if self.try_get_referral_id(key) is None:
            self.referral_ids[key] = referral_id
            self.new_keys.append({"key": key, "referral_id": referral_id, "sender": sender,
                                  "patient": patient})

    def park(self, inbox_id: int, key: str) -> None:
        waiting = self.parked_under(key)
        if all(found != inbox_id for _, found in waiting):
            waiting.append((0, inbox_id))
            self.new_parks.append({"inbox_id": inbox_id, "waiting_for": key,
                                   "parked_at": datetime.now(UTC)})

    def parked_under(self, key: str) -> list[tuple[int, int]]:
        if key not in self.parked:
            self.load_parked({key})
        return self.parked[key]

    def wake(self, key: str, woken_by: int) -> list[int]:
        """Re-queue the messages parked under `key` (in arrival order); their inbox ids."""
        waiting, self.parked[key] = self.parked_under(key), []
        inbox_ids = sorted({inbox_id for _, inbox_id in waiting} - self.unparked)
        for inbox_id in inbox_ids:
            self.unparked.add(inbox_id)
            self.requeue.append((WORK_KIND, {"inbox_id": inbox_id},
                                 f"hl7-unpark:{inbox_id}:{woken_by}"))
        return inbox_ids

    def set_state(self, entity: str, segments: list[str]) -> None:
        text = "\r".join(segments)
        if self.states.get(entity) != text:
            self.states[entity] = text
            self.changed_states[entity] = text

    def forget_patients(self) -> None:
        """After a merge moved identifiers and rewrote patients: read them again."""
        self.patients.clear()
        self.current = {k: v for k, v in self.current.items() if k[1] != "Patient"}

    # writing ----------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write everything decided so far: resources, index rows, parks, states, referrals
        (whose listeners then run), re-queued messages."""
        self.resources.write_pending(self.pending, self.conn)
        index.insert_referral_keys(self.conn, self.new_keys)
        index.insert_patient_ids(self.conn, self.new_patient_ids)
        parks = [p for p in self.new_parks if p["inbox_id"] not in self.unparked]
        index.insert_parks(self.conn, parks)
        index.unpark_messages(self.conn, sorted(self.unparked))
        now = datetime.now(UTC)
        index.save_states(self.conn, [{"entity": e, "segments": s, "updated_at": now}
                                      for e, s in self.changed_states.items()])
        self.referrals.flush()
        self.work.enqueue_many(self.requeue, conn=self.conn)
        self.new_keys, self.new_patient_ids, self.new_parks = [], [], []
        self.unparked, self.requeue, self.changed_states = set(), [], {}
