"""What a batch of messages reads, read once: patient identifiers, current resource versions,
referral keys, parked keys. Filled by bulk queries before the batch, kept up to date by the
batch's own writes (so nothing just written is read back), and asked of the database only for
what the bulk queries did not cover. Lives for one write transaction; after a failed message
the batch stops and the lookups are dropped with it."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from hl7_bridge import index
from referrals.store.resources import CurrentVersion, ResourceKey, ResourceStore

Pair = tuple[str, str]


class BatchLookups:
    def __init__(self, conn: Connection, resources: ResourceStore) -> None:
        self.conn = conn
        self.resources = resources
        #: (system, value) -> (patient id, server), or None when known to be unindexed
        self.patients: dict[Pair, tuple[str, str] | None] = {}
        #: resource key -> current version, or None when we hold none
        self.current: dict[ResourceKey, CurrentVersion | None] = {}
        #: referral business key -> referral id, or None when unknown
        self.referrals: dict[str, str | None] = {}
        #: parked keys known to have waiting messages (others known to have none)
        self.parked: set[str] = set()
        self.parked_checked: set[str] = set()

    # bulk loading ------------------------------------------------------------------------------

    def load_patients(self, pairs: set[Pair]) -> None:
        found = index.patients_by_identifier(self.conn, pairs - self.patients.keys())
        for pair in pairs:
            self.patients.setdefault(pair, found.get(pair))

    def load_resources(self, keys: set[ResourceKey]) -> None:
        found = self.resources.current_many(keys - self.current.keys(), self.conn)
        for key in keys:
            self.current.setdefault(key, found.get(key))

    def load_referral_keys(self, keys: set[str]) -> None:
        found = index.referral_ids_by_key(self.conn, keys - self.referrals.keys())
        for key in keys:
            self.referrals.setdefault(key, found.get(key))

    def load_parked(self, keys: set[str]) -> None:
        self.parked |= index.waited_for(self.conn, keys - self.parked_checked)
        self.parked_checked |= keys

    # reads ---------------------------------------------------------------------------------------

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
        if key not in self.referrals:
            self.load_referral_keys({key})
        return self.referrals[key]

    def may_be_parked(self, key: str) -> bool:
        if key not in self.parked_checked:
            self.load_parked({key})
        return key in self.parked

    # writes --------------------------------------------------------------------------------------

    def put(self, resource: dict[str, Any], server: str) -> None:
        key = (server, str(resource["resourceType"]), str(resource["id"]))
        self.current[key] = self.resources.put_over(resource, self.current_of(key),
                                                    server=server, conn=self.conn)

    def index_patient(self, patient_id: str, server: str,
                      identifiers: list[dict[str, Any]]) -> None:
        """index.index_patient without take-over: only identifiers nobody holds are written."""
        pairs = {(str(i["system"]), str(i["value"])) for i in identifiers}
        self.load_patients(pairs)
        new = [i for i in identifiers if self.patients[(str(i["system"]), str(i["value"]))]
               is None]
        if new:
            index.index_patient(self.conn, patient_id, server, new)
            for i in new:
                self.patients[(str(i["system"]), str(i["value"]))] = (patient_id, server)

    def added_referral_key(self, key: str, referral_id: str) -> None:
        self.referrals.setdefault(key, referral_id)
        if self.referrals[key] is None:
            self.referrals[key] = referral_id

    def parked_now(self, key: str) -> None:
        self.parked.add(key)
        self.parked_checked.add(key)

    def unparked(self, key: str) -> None:
        self.parked.discard(key)
        self.parked_checked.add(key)

    def forget_patients(self) -> None:
        """After a merge moved identifiers and rewrote patients: read them again."""
        self.patients.clear()
        self.current = {k: v for k, v in self.current.items() if k[1] != "Patient"}
