"""Lookups the bridge keeps in its own tables: referral business keys, patient identifiers,
parked messages. All take the caller's connection (one transaction per applied message)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from hl7_bridge.tables import entity_state, parked, patient_ids, referral_keys
from referrals.errors import RetryLater
from referrals.store.bulk import Bulk


def _insert(conn: Connection, table: sa.Table) -> Any:
    return (postgresql.insert(table) if conn.dialect.name == "postgresql"
            else sqlite.insert(table))


def try_get_referral_id(conn: Connection, key: str) -> str | None:
    return conn.execute(sa.select(referral_keys.c.referral_id)
                        .where(referral_keys.c.key == key)).scalar()


def add_referral_key(conn: Connection, key: str, referral_id: str, sender: str,
                     patient: str) -> None:
    conn.execute(_insert(conn, referral_keys).values(
        key=key, referral_id=referral_id, sender=sender, patient=patient)
        .on_conflict_do_nothing(index_elements=["key"]))


def referral_ids_of_patient(conn: Connection, patient: str) -> list[str]:
    return sorted(set(conn.execute(sa.select(referral_keys.c.referral_id)
                                   .where(referral_keys.c.patient == patient)).scalars()))


def repoint_patient(conn: Connection, old: str, new: str) -> None:
    conn.execute(referral_keys.update().where(referral_keys.c.patient == old)
                 .values(patient=new))


def try_get_patient(conn: Connection, identifiers: list[dict[str, Any]]
                    ) -> tuple[str, str] | None:
    """(patient id, server) of the first identifier we know."""
    for identifier in identifiers:
        row = conn.execute(sa.select(patient_ids.c.patient_id, patient_ids.c.server).where(
            patient_ids.c.system == identifier["system"],
            patient_ids.c.value == identifier["value"])).first()
        if row is not None:
            return str(row.patient_id), str(row.server)
    return None


def index_patient(conn: Connection, patient_id: str, server: str,
                  identifiers: list[dict[str, Any]], *, take_over: bool = False) -> None:
    for identifier in identifiers:
        statement = _insert(conn, patient_ids).values(
            system=identifier["system"], value=identifier["value"], patient_id=patient_id,
            server=server)
        if take_over:
            statement = statement.on_conflict_do_update(
                index_elements=["system", "value"],
                set_={"patient_id": patient_id, "server": server})
        else:
            statement = statement.on_conflict_do_nothing(index_elements=["system", "value"])
        conn.execute(statement)


def move_identifiers(conn: Connection, old: str, new: str, server: str) -> None:
    conn.execute(patient_ids.update().where(patient_ids.c.patient_id == old)
                 .values(patient_id=new, server=server))


def park(conn: Connection, inbox_id: int, waiting_for: str) -> None:
    conn.execute(_insert(conn, parked).values(
        inbox_id=inbox_id, waiting_for=waiting_for, parked_at=datetime.now(UTC))
        .on_conflict_do_nothing(index_elements=["inbox_id", "waiting_for"]))


def unpark(conn: Connection, waiting_for: str) -> list[tuple[int, int]]:
    """Remove and return (parked row id, inbox id) of messages waiting for `waiting_for`."""
    rows = conn.execute(sa.select(parked.c.id, parked.c.inbox_id)
                        .where(parked.c.waiting_for == waiting_for)
                        .order_by(parked.c.inbox_id)).all()
    if rows:
        conn.execute(parked.delete().where(parked.c.id.in_([r.id for r in rows])))
    return [(int(r.id), int(r.inbox_id)) for r in rows]


def unpark_messages(conn: Connection, inbox_ids: list[int]) -> None:
    """Remove the parked rows of woken messages (one per spelling of the key they wait for)."""
    if inbox_ids:
        conn.execute(parked.delete().where(parked.c.inbox_id.in_(inbox_ids)))


# --- bulk reads for a batch of messages (see lookups.py) --------------------------------------

_PATIENTS_OF_SYSTEM = sa.select(patient_ids.c.value, patient_ids.c.patient_id,
                                patient_ids.c.server).where(
    patient_ids.c.system == sa.bindparam("system"),
    patient_ids.c.value.in_(sa.bindparam("values", expanding=True)))


def patients_by_identifier(conn: Connection, pairs: set[tuple[str, str]]
                           ) -> dict[tuple[str, str], tuple[str, str]]:
    """(system, value) -> (patient id, server) for the pairs we know: one query per system
    (the primary key's order, so an index lookup however large the index grows)."""
    by_system: dict[str, set[str]] = {}
    for system, value in pairs:
        by_system.setdefault(system, set()).add(value)
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for system, values in by_system.items():
        for row in conn.execute(_PATIENTS_OF_SYSTEM, {"system": system,
                                                      "values": sorted(values)}):
            found[(system, row.value)] = (str(row.patient_id), str(row.server))
    return found


def referral_ids_by_key(conn: Connection, keys: set[str]) -> dict[str, str]:
    if not keys:
        return {}
    rows = conn.execute(sa.select(referral_keys.c.key, referral_keys.c.referral_id)
                        .where(referral_keys.c.key.in_(sorted(keys))))
    return {str(r.key): str(r.referral_id) for r in rows}


def parked_by_key(conn: Connection, keys: set[str]) -> dict[str, list[tuple[int, int]]]:
    """waited-for key -> (parked row id, inbox id) of the messages waiting for it."""
    if not keys:
        return {}
    found: dict[str, list[tuple[int, int]]] = {}
    for row in conn.execute(sa.select(parked.c.id, parked.c.inbox_id, parked.c.waiting_for)
                            .where(parked.c.waiting_for.in_(sorted(keys)))
                            .order_by(parked.c.inbox_id)):
        found.setdefault(str(row.waiting_for), []).append((int(row.id), int(row.inbox_id)))
    return found


# --- bulk writes of a batch (lookups.py) -----------------------------------------------------

def _new_rows(table: sa.Table, key: list[str]) -> Bulk:
    """INSERT ... ON CONFLICT (key) DO NOTHING of every column, for batch writes."""
    def build(dialect: str) -> Any:
        insert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
        columns = {c.name: sa.bindparam(c.name, type_=c.type) for c in table.c}
        return insert.values(columns).on_conflict_do_nothing(index_elements=key)
    return Bulk(build)


_NEW_KEYS = _new_rows(referral_keys, ["key"])
_NEW_PATIENT_IDS = _new_rows(patient_ids, ["system", "value"])


def insert_referral_keys(conn: Connection, rows: list[dict[str, str]]) -> None:
    _NEW_KEYS.run(conn, rows)


def insert_patient_ids(conn: Connection, rows: list[dict[str, str]]) -> None:
    """Index new patients' identifiers. On PostgreSQL another worker may have indexed one of
    them for a new patient of its own since this batch read the index (new patients get
    time-ordered ids, ids.py, so the two patients' ids differ): the insert then did nothing,
    and the batch retries, to find that patient."""
    # in key order: two workers indexing the same identifiers never wait on each other in turn
    rows = sorted(rows, key=lambda r: (r["system"], r["value"]))
    _NEW_PATIENT_IDS.run(conn, rows)
    if rows and conn.dialect.name == "postgresql":
        mine = {(r["system"], r["value"]): r["patient_id"] for r in rows}
        owners = patients_by_identifier(conn, set(mine))
        if any(owners.get(pair, (patient_id, ""))[0] != patient_id
               for pair, patient_id in mine.items()):
            raise RetryLater("a patient identifier of this batch was indexed by another "
                             "worker at the same time", delay_seconds=1.0)


def insert_parks(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(_insert(conn, parked).on_conflict_do_nothing(
            index_elements=["inbox_id", "waiting_for"]), rows)


def states(conn: Connection, entities: set[str]) -> dict[str, str]:
    """entity -> its stored v2 segments (merge.py), in one query."""
    if not entities:
        return {}
    return {str(e): str(s) for e, s in conn.execute(
        sa.select(entity_state.c.entity, entity_state.c.segments)
        .where(entity_state.c.entity.in_(sorted(entities))))}


def _upsert_states(dialect: str) -> Any:
    insert = postgresql.insert(entity_state) if dialect == "postgresql" \
        else sqlite.insert(entity_state)
    statement = insert.values({c.name: sa.bindparam(c.name, type_=c.type)
                               for c in entity_state.c})
    return statement.on_conflict_do_update(
        index_elements=["entity"], set_={"segments": statement.excluded.segments,
                                         "updated_at": statement.excluded.updated_at})


_SAVE_STATES = Bulk(_upsert_states)


def save_states(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert or replace (entity, segments, updated_at) rows."""
    _SAVE_STATES.run(conn, rows)
