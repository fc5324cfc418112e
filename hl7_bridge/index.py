"""Lookups the bridge keeps in its own tables: referral business keys, patient identifiers,
parked messages. All take the caller's connection (one transaction per applied message)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from hl7_bridge.tables import parked, patient_ids, referral_keys


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

def patients_by_identifier(conn: Connection, pairs: set[tuple[str, str]]
                           ) -> dict[tuple[str, str], tuple[str, str]]:
    """(system, value) -> (patient id, server) for the pairs we know, in one query."""
    if not pairs:
        return {}
    rows = conn.execute(sa.select(patient_ids).where(
        patient_ids.c.value.in_(sorted({value for _, value in pairs}))))
    return {(r.system, r.value): (str(r.patient_id), str(r.server)) for r in rows
            if (r.system, r.value) in pairs}


def referral_ids_by_key(conn: Connection, keys: set[str]) -> dict[str, str]:
    if not keys:
        return {}
    rows = conn.execute(sa.select(referral_keys.c.key, referral_keys.c.referral_id)
                        .where(referral_keys.c.key.in_(sorted(keys))))
    return {str(r.key): str(r.referral_id) for r in rows}


def waited_for(conn: Connection, keys: set[str]) -> set[str]:
    """Which of `keys` parked messages are waiting for."""
    if not keys:
        return set()
    return set(conn.execute(sa.select(parked.c.waiting_for).distinct()
                            .where(parked.c.waiting_for.in_(sorted(keys)))).scalars())
